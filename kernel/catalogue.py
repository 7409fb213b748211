"""Auth0 log event codes: what each means and which stream filter category it belongs to.

The codes are Auth0's machine-readable list (auth0/auth0-log-schemas); tests/data/auth0-log-schemas/codes.json
holds a copy with the commit it was taken from, and scripts/refresh-catalogue updates it.
"""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EventType:
    """One Auth0 log event code as documented by Auth0."""

    code: str
    name: str
    description: str
    category: str | None
    #: False for a code the copy of Auth0's machine-readable list shipped here lacks: dropped from the list
    #: (old tenants' logs still carry it), never in it, or unknown to this version.
    in_auth0_list: bool = True


# Mirrors Auth0's "Log stream filters" page (customize/log-streams/event-filters). It is kept as its own
# literal, not derived from the entries, so the tests can catch the two documents drifting apart.
_FILTER_TABLE: dict[str, frozenset[str]] = {
    "actions": frozenset({"actions_execution_failed"}),
    "auth.login.fail": frozenset({"f", "fc", "fco", "fcoa", "fens", "fp", "fu"}),
    "auth.login.notification": frozenset({"w"}),
    "auth.login.success": frozenset({"s", "scoa", "sens"}),
    "auth.logout.fail": frozenset({"flo", "oidc_backchannel_logout_failed"}),
    "auth.logout.success": frozenset({"oidc_backchannel_logout_succeeded", "slo"}),
    "auth.signup.fail": frozenset({"fs"}),
    "auth.signup.success": frozenset({"ss"}),
    "auth.silent_auth.fail": frozenset({"fsa"}),
    "auth.silent_auth.success": frozenset({"ssa"}),
    "auth.token_exchange.fail": frozenset(
        {"feacft", "feccft", "fede", "feoobft", "feotpft", "fepft", "fepotpft", "fercft", "ferrt", "fertft"}
    ),
    "auth.token_exchange.success": frozenset(
        {"seacft", "seccft", "sede", "seoobft", "seotpft", "sepft", "sercft", "sertft"}
    ),
    # Auth0 offers this filter but documents no codes for it.
    "management.fail": frozenset(),
    "management.success": frozenset({"sapi", "mgmt_api_read"}),
    "system.notification": frozenset(
        {
            "admin_update_launch",
            "api_limit",
            "coff",
            "con",
            "depnote",
            "fcpro",
            "fui",
            "limit_delegation",
            "limit_mu",
            "limit_wc",
            "sys_os_update_start",
            "sys_os_update_end",
            "sys_update_start",
            "sys_update_end",
        }
    ),
    "user.fail": frozenset(
        {
            "fce",
            "fcp",
            "fcpn",
            "fcpr",
            "fcu",
            "fd",
            "fdeaz",
            "fdecc",
            "fdu",
            "fn",
            "fv",
            "fvr",
            "ss_sso_failure",
        }
    ),
    "user.notification": frozenset(
        {
            "cs",
            "gd_enrollment_complete",
            "gd_start_enroll",
            "gd_unenroll",
            "gd_update_device_account",
            "ss_sso_info",
            "ublkdu",
        }
    ),
    "user.success": frozenset(
        {"sce", "scp", "scpn", "scpr", "scu", "sdu", "srrt", "ss_sso_success", "sui", "sv", "svr"}
    ),
    "scim.event": frozenset({"sscim", "fscim"}),
}

# Codes the filter page does not list, filed under a filter category by Auth0's "Tenant Logs" reference
# (auth0.com/docs/tenant-logs/<category>/<code>). Only codes added since the filter page was mirrored are
# taken from it, so that no code already routed as "other" moves without notice.
_TENANT_LOGS_TABLE: dict[str, frozenset[str]] = {
    "auth.login.success": frozenset({"sdel"}),
    "auth.silent_auth.fail": frozenset({"fdelsa"}),
    "auth.silent_auth.success": frozenset({"sdelsa"}),
    "auth.token_exchange.fail": frozenset({"fdeleacft"}),
    "auth.token_exchange.success": frozenset({"sdeleacft"}),
}

_ENTRIES: tuple[EventType, ...] = (
    EventType("acls_summary", "Network ACLs Summary", "Summary of network ACL matches for a period", None),
    EventType(
        "actions_execution_failed", "Actions Execution Failed", "Execution of an Action failed", "actions"
    ),
    EventType("acul_sdk_notice", "ACUL SDK Notice", "ACUL SDK notification", None),
    EventType(
        "api_limit",
        "Rate Limit on the Authentication or Management APIs",
        "Maximum number of requests in a given time reached",
        "system.notification",
    ),
    EventType("api_limit_warning", "Rate Limit Warning", "Request limit is about to be reached", None),
    EventType("appi", "API Peak Performance initiated", "Public Performance Burst interval deducted", None),
    EventType(
        "ciba_exchange_failed", "Failed CIBA Exchange", "Failed to exchange AuthReqId for Access Token", None
    ),
    EventType(
        "ciba_exchange_succeeded", "Successful CIBA Exchange", "Exchanged AuthReqId for Access Token", None
    ),
    EventType("ciba_start_failed", "Failed CIBA Start", "CIBA flow failed to be initiated", None),
    EventType("ciba_start_succeeded", "Successful CIBA Start", "CIBA flow initiated", None),
    EventType("cls", "Code/Link Sent", "Passwordless login code/link sent", None),
    EventType(
        "connected_accounts_connection_failed",
        "Failed Connected Account Connection",
        "User failed to connect a third-party account",
        None,
    ),
    EventType(
        "connected_accounts_connection_succeeded",
        "Successful Connected Account Connection",
        "User connected a third-party account",
        None,
    ),
    EventType(
        "connected_accounts_delete_failed",
        "Failed Connected Account Delete",
        "User failed to delete a connected account",
        None,
    ),
    EventType(
        "connected_accounts_delete_succeeded",
        "Successful Connected Account Delete",
        "User deleted a connected account",
        None,
    ),
    EventType("cs", "Code Sent", "Passwordless login code sent", "user.notification"),
    EventType("custom_domain_verification_failed", "Custom Domain Verification Failed", "", None),
    EventType("depnote", "Deprecation Notice", "", "system.notification"),
    EventType("directory_sync_completed", "Inbound Directory Sync Completed", "", None),
    EventType("directory_sync_failed", "Inbound Directory Sync Failed", "", None),
    EventType("directory_sync_started", "Inbound Directory Sync Started", "", None),
    EventType("f", "Failed Login", "Only when neither fp nor fu applies", "auth.login.fail"),
    EventType("failed_on_behalf_of_token_exchange", "Failed Exchange", "On-Behalf-Of Token Exchange", None),
    EventType("fc", "Failed by Connector", "", "auth.login.fail", False),
    EventType("fce", "Failed Change Email", "", "user.fail"),
    EventType("fco", "Failed by CORS", "Origin not in Allowed Origins", "auth.login.fail"),
    EventType("fcoa", "Failed cross-origin authentication", "", "auth.login.fail"),
    EventType("fcp", "Failed Change Password", "", "user.fail"),
    EventType("fcph", "Failed Post Change Password Hook", "", None),
    EventType("fcpn", "Failed Change Phone Number", "", "user.fail"),
    EventType("fcpr", "Failed Change Password Request", "", "user.fail"),
    EventType("fcpro", "Failed Connector Provisioning", "AD/LDAP connector", "system.notification"),
    EventType("fcu", "Failed Change Username", "", "user.fail"),
    EventType("fd", "Failed Delegation", "", "user.fail"),
    EventType("fdeac", "Failed Device Activation", "", None),
    EventType("fdeaz", "Failed Device Authorization Request", "", "user.fail"),
    EventType("fdecc", "User Canceled Device Confirmation", "", "user.fail"),
    EventType(
        "fdeleacft",
        "Failed Exchange",
        "Failed to Exchange Delegated Authorization Code for Access Token",
        "auth.token_exchange.fail",
    ),
    EventType("fdelsa", "Failed Delegated Silent Authentication", "", "auth.silent_auth.fail"),
    EventType("fdu", "Failed User Deletion", "", "user.fail"),
    EventType("feacft", "Failed Exchange", "Authorization Code for Access Token", "auth.token_exchange.fail"),
    EventType("feccft", "Failed Exchange", "Client Credentials Grant", "auth.token_exchange.fail"),
    EventType("fecte", "Failed Exchange", "Custom Token Exchange", None),
    EventType("fede", "Failed Exchange", "Device Code for Access Token", "auth.token_exchange.fail"),
    EventType("federated_logout_failed", "Failed Federated Logout", "Upstream IdP logout failed", None),
    EventType("fens", "Failed Exchange", "Native Social Login", "auth.login.fail"),
    EventType("feoobft", "Failed Exchange", "Password and OOB Challenge", "auth.token_exchange.fail"),
    EventType("feotpft", "Failed Exchange", "Password and OTP Challenge", "auth.token_exchange.fail"),
    EventType("fepft", "Failed Exchange", "Password for Access Token", "auth.token_exchange.fail"),
    EventType("fepotpft", "Failed Exchange", "Passwordless OTP for Access Token", "auth.token_exchange.fail"),
    EventType("fercft", "Failed Exchange", "Password and MFA Recovery code", "auth.token_exchange.fail"),
    EventType(
        "ferrt", "Failed Exchange", "Rotating Refresh Token (e.g. reuse detected)", "auth.token_exchange.fail"
    ),
    EventType(
        "fertft",
        "Failed Exchange",
        "Refresh Token for Access Token (revoked or expired)",
        "auth.token_exchange.fail",
    ),
    EventType("feta", "Failed Exchange", "Token Vault", None),
    EventType("fi", "Failed invite accept", "", None),
    EventType("flo", "Failed Logout", "", "auth.logout.fail"),
    EventType("flows_execution_completed", "Flows Execution Completed", "", None),
    EventType("flows_execution_failed", "Flows Execution Failed", "", None),
    EventType("fn", "Failed Sending Notification", "", "user.fail"),
    EventType("forms_submission_failed", "Failed Forms Submission", "", None),
    EventType("forms_submission_succeeded", "Successful Forms Submission", "", None),
    EventType("fp", "Failed Login (Incorrect Password)", "", "auth.login.fail"),
    EventType("fpar", "Failed Pushed Authorization Request", "", None),
    EventType("fpurh", "Failed Post User Registration Hook", "", None),
    EventType("fs", "Failed Signup", "", "auth.signup.fail"),
    EventType("fsa", "Failed Silent Auth", "", "auth.silent_auth.fail"),
    EventType("fscim", "Failed SCIM Operation", "", "scim.event"),
    EventType("fu", "Failed Login (Invalid Email/Username)", "", "auth.login.fail"),
    EventType("fui", "Failed users import", "", "system.notification"),
    EventType("fv", "Failed Verification Email", "", "user.fail"),
    EventType("fvr", "Failed Verification Email Request", "", "user.fail"),
    EventType("gd_auth_email_verification", "MFA Email Verification Confirmed", "", None),
    EventType("gd_auth_fail_email_verification", "MFA Email Verification Failed", "", None, False),
    EventType("gd_auth_failed", "MFA Auth Failed", "", None),
    EventType("gd_auth_rejected", "MFA Auth Rejected", "Push notification rejected", None),
    EventType("gd_auth_succeed", "MFA Auth Success", "", None),
    EventType("gd_enrollment_complete", "MFA enrollment complete", "", "user.notification"),
    EventType("gd_otp_rate_limit_exceed", "Too many MFA failures", "More than 10 requests per hour", None),
    EventType("gd_recovery_failed", "MFA Recovery Failed", "MFA recovery code", None),
    EventType(
        "gd_recovery_rate_limit_exceed", "MFA Recovery Rate Limit Exceeded", "MFA recovery code", None, False
    ),
    EventType("gd_recovery_succeed", "MFA Recovery Success", "MFA recovery code", None),
    EventType("gd_send_email", "MFA Email Sent", "", None),
    EventType("gd_send_email_verification", "MFA Email Verification Sent", "", None),
    EventType("gd_send_email_verification_failure", "MFA Email Verification Send Failed", "", None, False),
    EventType("gd_send_pn", "MFA Push Notification Sent", "", None),
    EventType("gd_send_pn_failure", "MFA Push Notification Failed", "", None),
    EventType("gd_send_sms", "MFA SMS Sent", "", None),
    EventType("gd_send_sms_failure", "MFA SMS Failed", "", None),
    EventType("gd_send_voice", "MFA Voice Call Sent", "", None),
    EventType("gd_send_voice_failure", "MFA Voice Call Failed", "", None),
    EventType("gd_start_auth", "Second Factor Started", "", None),
    EventType("gd_start_enroll", "MFA Enroll Started", "", "user.notification"),
    EventType("gd_start_enroll_failed", "MFA Enroll Failed", "", None),
    EventType("gd_tenant_update", "Guardian tenant update", "", None),
    EventType("gd_unenroll", "MFA Device Unenrolled", "", "user.notification"),
    EventType("gd_update_device_account", "MFA Device Updated", "", "user.notification"),
    EventType("gd_webauthn_challenge_failed", "WebAuthn Challenge Failed", "WebAuthn browser error", None),
    EventType("gd_webauthn_enrollment_failed", "WebAuthn Enrollment Failed", "WebAuthn browser error", None),
    EventType(
        "idjag_exchange_failed", "Failed ID-JAG Exchange", "Identity Assertion Authorization Grant JWT", None
    ),
    EventType(
        "idjag_exchange_succeeded",
        "Successful ID-JAG Exchange",
        "Identity Assertion Authorization Grant JWT",
        None,
    ),
    EventType("jwt_bearer_exchange_failed", "Failed Exchange", "JWT Bearer Assertion", None),
    EventType("kms_key_management_failure", "KMS Key Management Failure", "", None),
    EventType("kms_key_management_success", "KMS Key Management Success", "", None),
    EventType("kms_key_state_changed", "KMS Key State Changed", "", None),
    EventType("limit_delegation", "Too Many Calls to /delegation", "", "system.notification"),
    EventType(
        "limit_mu",
        "Blocked IP Address",
        "Too many failed logins or signups from an IP",
        "system.notification",
    ),
    EventType("limit_phone", "Phone Rate Limit", "", None),
    EventType("limit_sul", "Blocked Account", "Max logins per period from the same IP", None),
    EventType(
        "limit_wc",
        "Blocked Account",
        "IP reached max failed logins into one account",
        "system.notification",
    ),
    EventType("mfar", "MFA Required", "ROPG only", None),
    EventType(
        "mgmt_api_read", "Management API read Operation", "GET returning secrets", "management.success"
    ),
    EventType(
        "my_account_authentication_method_failed",
        "Failed My Account API Authentication Method Operation",
        "",
        None,
    ),
    EventType(
        "my_account_authentication_method_succeeded",
        "Successful My Account API Authentication Method Operation",
        "",
        None,
    ),
    EventType("oidc_backchannel_logout_failed", "Failed OIDC Back-Channel Logout", "", "auth.logout.fail"),
    EventType(
        "oidc_backchannel_logout_succeeded", "Successful OIDC Back-Channel Logout", "", "auth.logout.success"
    ),
    EventType("organization_member_added", "Organization Member Added", "", None),
    EventType("passkey_challenge_failed", "Failed Native Passkey Challenge", "", None),
    EventType("passkey_challenge_started", "Native Passkey Challenge Started", "", None),
    EventType("pla", "Pre-login assessment", "Bot-detection monitoring", None),
    EventType(
        "pwd_leak",
        "Breached password",
        "Login with a leaked password; logged once per hour per IP",
        None,
    ),
    EventType("reset_pwd_leak", "Breached Password on Reset", "", None),
    EventType("resource_cleanup", "Success Resource Cleanup", "", None),
    EventType("rich_consents_access_error", "Rich Consents Access Error", "", None),
    EventType("s", "Success Login", "", "auth.login.success"),
    EventType("sapi", "Success API Operation", "Management API write", "management.success"),
    EventType("sce", "Success Change Email", "", "user.success"),
    EventType("scoa", "Success cross-origin authentication", "", "auth.login.success"),
    EventType("scp", "Success Change Password", "", "user.success"),
    EventType("scpn", "Success Change Phone Number", "", "user.success"),
    EventType("scpr", "Success Change Password Request", "", "user.success"),
    EventType("scu", "Success Change Username", "", "user.success"),
    EventType("scv", "Success Credential Validation", "", None),
    EventType("sd", "Success Delegation", "", None),
    EventType("sdel", "Successful Delegated Login", "", "auth.login.success"),
    EventType(
        "sdeleacft",
        "Success Exchange",
        "Successful Exchange of Delegated Authorization Code for Access Token",
        "auth.token_exchange.success",
    ),
    EventType("sdelsa", "Successful Delegated Silent Authentication", "", "auth.silent_auth.success"),
    EventType("sdu", "Success User Deletion", "", "user.success"),
    EventType(
        "seacft", "Success Exchange", "Authorization Code for Access Token", "auth.token_exchange.success"
    ),
    EventType("seccft", "Success Exchange", "Client Credentials Grant", "auth.token_exchange.success"),
    EventType("secte", "Success Exchange", "Custom Token Exchange", None),
    EventType("sede", "Success Exchange", "Device Code for Access Token", "auth.token_exchange.success"),
    EventType("sens", "Success Exchange", "Native Social Login", "auth.login.success"),
    EventType("seoobft", "Success Exchange", "Password and OOB Challenge", "auth.token_exchange.success"),
    EventType("seotpft", "Success Exchange", "Password and OTP Challenge", "auth.token_exchange.success"),
    EventType("sepft", "Success Exchange", "Password for Access Token", "auth.token_exchange.success"),
    EventType("sepkoobft", "Success Exchange", "Passkey and OOB Challenge", None),
    EventType("sepkotpft", "Success Exchange", "Passkey and OTP Challenge", None),
    EventType("sepkrcft", "Success Exchange", "Passkey and MFA Recovery code", None),
    EventType("sercft", "Success Exchange", "Password and MFA Recovery code", "auth.token_exchange.success"),
    EventType("sertft", "Success Exchange", "Refresh Token for Access Token", "auth.token_exchange.success"),
    EventType("seta", "Success Exchange", "Token Vault", None),
    EventType("si", "Successfully accepted a user invite", "", None),
    EventType("signup_pwd_leak", "Breached Password on Signup", "", None, False),
    EventType("slo", "Success Logout", "", "auth.logout.success"),
    EventType("srrt", "Successfully revoked a refresh token", "", "user.success"),
    EventType("ss", "Success Signup", "", "auth.signup.success"),
    EventType("ss_sso_failure", "Self-Service SSO Failure", "", "user.fail"),
    EventType("ss_sso_info", "Self-Service SSO Info", "", "user.notification"),
    EventType("ss_sso_success", "Self-Service SSO Success", "", "user.success"),
    EventType("ssa", "Success Silent Auth", "", "auth.silent_auth.success"),
    EventType("sscim", "Successful SCIM Operation", "", "scim.event"),
    EventType("success_on_behalf_of_token_exchange", "Success Exchange", "On-Behalf-Of Token Exchange", None),
    EventType("sui", "Successfully imported users", "", "user.success"),
    EventType("sv", "Success Verification Email", "Verification link consumed", "user.success"),
    EventType("svr", "Success Verification Email Request", "", "user.success"),
    EventType("too_many_records", "Max Amount of Authenticators", "", None, False),
    EventType("ublkdu", "User login block released", "", "user.notification"),
    EventType("universal_logout_failed", "Failed Universal Logout", "", None),
    EventType("universal_logout_succeeded", "Successful Universal Logout", "", None),
    EventType("w", "Warning During Login", "", "auth.login.notification"),
    EventType("wn", "Warning Sending Notification", "", None),
    EventType("wum", "Warning User Management", "", None),
    # Not in Auth0's machine-readable list (auth0-log-schemas) but named by the stream filter page or older
    # docs, or dropped from the list since: old tenants' logs (and the backfill) can still carry them.
    EventType("admin_update_launch", "Auth0 Update Launched", "", "system.notification", False),
    EventType("coff", "Connector Offline", "AD/LDAP connector is offline", "system.notification", False),
    EventType("con", "Connector Online", "AD/LDAP connector is online", "system.notification", False),
    EventType("sys_os_update_start", "Auth0 OS Update Started", "", "system.notification", False),
    EventType("sys_os_update_end", "Auth0 OS Update Ended", "", "system.notification", False),
    EventType("sys_update_start", "Auth0 Update Started", "", "system.notification", False),
    EventType("sys_update_end", "Auth0 Update Ended", "", "system.notification", False),
    EventType("fapi", "Failed API Operation", "", None, False),
    EventType("du", "Deleted User", "", None, False),
    EventType("elevated_rate_limit", "Elevated Rate Limit", "", None, False),
)

CATALOGUE: dict[str, EventType] = {entry.code: entry for entry in _ENTRIES}

# Auth0 only says "other" holds unclassified events, so it is taken to be every code the filter page omits.
CATEGORIES: dict[str, frozenset[str]] = {
    **{name: codes | _TENANT_LOGS_TABLE.get(name, frozenset()) for name, codes in _FILTER_TABLE.items()},
    "other": frozenset(entry.code for entry in _ENTRIES if entry.category is None),
}


def describe(code: str) -> EventType:
    """Return the catalogue entry for ``code``.

    An unknown code gets a placeholder entry instead of an error, because Auth0 adds codes without notice.
    """
    entry = CATALOGUE.get(code)
    if entry is None:
        return EventType(
            code, "Unknown event type", "Not in the catalogue shipped with this version", None, False
        )
    return entry


def codes_in_category(category: str) -> frozenset[str]:
    """Return the codes Auth0 files under the stream filter ``category``.

    Raises KeyError with a message naming the known categories when ``category`` is not one.
    """
    try:
        return CATEGORIES[category]
    except KeyError:
        known = ", ".join(sorted(CATEGORIES))
        raise KeyError(f"unknown stream filter category {category!r}; known categories: {known}") from None


def is_category(name: str) -> bool:
    """Return whether ``name`` is a stream filter category Auth0 documents (or "other")."""
    return name in CATEGORIES
