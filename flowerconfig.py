"""Flower's configuration file, which it reads from the working directory: the service's own log lines.

`celery -A tasks flower` sets up no logging of Celery's, and tornado's would print its own format without
masking. Flower runs this file before it parses its command line, so tornado finds the root logger
configured and adds no handler of its own.
"""

from kernel.logging_setup import configure_logging
from kernel.settings import get_settings

configure_logging(get_settings())
