//! Redis errors: which are worth retrying, and what a refused login means.

use super::super::diagnose::{Diagnosis, client, has, permanent};
use crate::error::ConnectorError;

impl ConnectorError {
    /// A redis-rs error met while doing `context`.
    pub fn redis(context: impl Into<String>, source: redis::RedisError) -> Self {
        let retryable = retryable(&source);
        client("redis", context.into(), retryable, Box::new(source))
    }
}

/// A wrong password or user, or a user without the permission: retrying
/// would be refused the same way.
pub(crate) fn auth_refused(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"))
}

fn retryable(e: &redis::RedisError) -> bool {
    use redis::RetryMethod::*;
    if auth_refused(e) {
        return false;
    }
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        return true;
    }
    match e.retry_method() {
        NoRetry => false,
        RetryImmediately | WaitAndRetry | Reconnect | ReconnectFromInitialConnections => true,
        AskRedirect | MovedRedirect | RefreshSlotsAndRetry => true,
        _ => false,
    }
}

/// Redis's refusals of a login or of a command (and redis-rs's names for
/// them).
pub(crate) fn explain_login(text: &str) -> Option<Diagnosis> {
    if has(
        text,
        &[
            "WRONGPASS",
            "invalid username-password pair",
            "AuthenticationFailed",
        ],
    ) {
        return permanent("wrong user name or password: check `username` and `password`");
    }
    if has(text, &["NOAUTH", "NoAuth", "Authentication required"]) {
        return permanent(
            "the server requires a login: set `password` (and `username` for an ACL user)",
        );
    }
    if has(text, &["NOPERM", "NoPerm", "no permissions to"]) {
        return permanent(
            "the user is not allowed a command or key ferry needs: grant it on the server \
             (Redis: ACL SETUSER) or use another user; `ferry check --connect` lists what is needed",
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_problems_are_retryable_and_auth_problems_are_not() {
        let io = redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        ));
        assert!(ConnectorError::redis("write", io).is_retryable());
        let wrong_password = redis::RedisError::from((
            redis::ErrorKind::AuthenticationFailed,
            "Password authentication failed",
        ));
        assert!(!ConnectorError::redis("connecting", wrong_password).is_retryable());
    }
}
