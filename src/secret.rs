//! Secrets: passwords, tokens and client secrets that ferry needs but must
//! never show.
//!
//! A [`Secret`] prints as `<redacted>` in every format (`Debug` included),
//! so a config struct or an error that holds one can be logged without
//! leaking it; only [`Secret::expose`] gives the value, and only the code
//! that hands it to a client library calls it. URLs can carry a password
//! too (`redis://:pw@host`, `amqp://user:pw@host`): [`mask_url`] hides it
//! wherever a URL is shown.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Deserializer};

/// What a secret (or a URL's password) is shown as.
pub const REDACTED: &str = "<redacted>";

/// A value that is never printed. Written in the config as a string, usually
/// `"${ENV_VAR}"` or `"${file:/run/secrets/name}"`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the client library that needs it. Never format it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Err(serde::de::Error::custom(
                "must not be empty (is the variable or file it comes from empty?)",
            ));
        }
        Ok(Self(s))
    }
}

/// Reads a secret from a file, as `${file:/path}` does: the whole file,
/// without the trailing newline that editors and `echo` add. The error
/// names the file, never its content.
pub fn read_file(path: &Path) -> Result<String, String> {
    let mut text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the secret file `{}`: {e}", path.display()))?;
    while text.ends_with('\n') || text.ends_with('\r') {
        text.pop();
    }
    Ok(text)
}

/// The URL with the password of its user part (`scheme://user:password@`)
/// replaced by `<redacted>`; anything else is left as it is.
pub fn mask_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest_start = scheme_end + 3;
    let rest = &url[rest_start..];
    // The user part ends at the last `@` before the path.
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let masked = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:{REDACTED}"),
        // `redis://password@host` is how some write a password alone.
        None if url.starts_with("redis") => REDACTED.to_owned(),
        None => return url.to_owned(),
    };
    format!("{}{masked}{}", &url[..rest_start], &rest[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints_its_value() {
        let s = Secret::new("hunter2");
        assert_eq!(
            format!("{s} {s:?} {:?}", Some(&s)),
            "<redacted> <redacted> Some(<redacted>)"
        );
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn url_passwords_are_masked_and_the_rest_kept() {
        assert_eq!(
            mask_url("amqps://ferry:s3cr@t@rabbit:5671/prod"),
            "amqps://ferry:<redacted>@rabbit:5671/prod"
        );
        assert_eq!(
            mask_url("redis://:pw@127.0.0.1:6379/2"),
            "redis://:<redacted>@127.0.0.1:6379/2"
        );
        assert_eq!(mask_url("rediss://pw@h/0"), "rediss://<redacted>@h/0");
        assert_eq!(mask_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(
            mask_url("rediss://h:6380/#insecure"),
            "rediss://h:6380/#insecure"
        );
        assert_eq!(mask_url("not a url"), "not a url");
    }

    #[test]
    fn secret_files_lose_their_trailing_newline_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "top secret\n").unwrap();
        assert_eq!(read_file(&path).unwrap(), "top secret");
        let e = read_file(&dir.path().join("missing")).unwrap_err();
        assert!(e.contains("missing"), "{e}");
    }
}
