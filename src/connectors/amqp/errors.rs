//! lapin errors: which are worth retrying, and what a refused login or
//! virtual host means.

use super::super::diagnose::{Diagnosis, client, has, permanent};
use crate::error::ConnectorError;

impl ConnectorError {
    /// A lapin error met while doing `context`.
    pub fn amqp(context: impl Into<String>, source: lapin::Error) -> Self {
        let retryable = retryable(&source);
        client("amqp", context.into(), retryable, Box::new(source))
    }
}

fn retryable(e: &lapin::Error) -> bool {
    use lapin::ErrorKind as K;
    use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
    match e.kind() {
        K::ProtocolError(amqp) => !matches!(
            amqp.kind(),
            AMQPErrorKind::Soft(
                AMQPSoftError::ACCESSREFUSED
                    | AMQPSoftError::NOTFOUND
                    | AMQPSoftError::PRECONDITIONFAILED
            ) | AMQPErrorKind::Hard(
                AMQPHardError::NOTALLOWED
                    | AMQPHardError::INVALIDPATH
                    | AMQPHardError::NOTIMPLEMENTED
                    | AMQPHardError::SYNTAXERROR
            )
        ),
        K::InvalidProtocolVersion(_) | K::NoDefaultRuntime | K::AuthProviderError(_) => false,
        _ => true,
    }
}

/// RabbitMQ's refusals of a login, of access, or of a virtual host.
pub(crate) fn explain_login(text: &str) -> Option<Diagnosis> {
    if has(
        text,
        &[
            "ACCESS_REFUSED",
            "ACCESSREFUSED",
            "access refused",
            "Login was refused",
        ],
    ) {
        return permanent(
            "RabbitMQ refused the login or access: check `username`, `password` and that the \
             user has permissions on the `vhost`",
        );
    }
    if has(
        text,
        &["NOT_ALLOWED", "NOTALLOWED", "vhost", "INVALID_PATH"],
    ) && has(text, &["vhost"])
    {
        return permanent("RabbitMQ has no such virtual host for this user: check `vhost`");
    }
    None
}
