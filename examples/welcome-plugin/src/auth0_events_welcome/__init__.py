"""Example auth0-events plug-in: new users land on a welcome list, and a CRM hears about them."""
