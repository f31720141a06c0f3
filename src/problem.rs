//! One thing wrong with a config value, and where it sits.
//!
//! Low in the house: values, connector settings and steps report their
//! refusals as [`Problem`]s, with a span (from serde) or a [`ConfigPath`]
//! (from a cross-field check), and `config` turns them into file:line:column
//! diagnostics. Nothing here knows the file's structure.

use std::fmt;
use std::ops::Range;

/// One step of a path into the config: a key or an array index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// Where a value sits in the config, e.g. `pipeline[0].sink[1].key`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigPath(Vec<Segment>);

impl ConfigPath {
    pub fn root() -> Self {
        Self::default()
    }

    /// The keys and indexes from the top of the file down.
    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    pub fn key(&self, key: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Segment::Key(key.to_owned()));
        p
    }

    pub fn index(&self, index: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Segment::Index(index));
        p
    }
}

impl fmt::Display for ConfigPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Segment::Key(k) if i == 0 => write!(f, "{k}")?,
                Segment::Key(k) => write!(f, ".{k}")?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// One thing wrong with a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub span: Option<Range<usize>>,
    pub path: Option<ConfigPath>,
    pub message: String,
    pub help: Option<String>,
}

impl Problem {
    pub fn at_span(span: Range<usize>, message: impl Into<String>, help: Option<String>) -> Self {
        Self {
            span: Some(span),
            path: None,
            message: message.into(),
            help,
        }
    }

    pub fn at_path(path: ConfigPath, message: impl Into<String>) -> Self {
        Self {
            span: None,
            path: Some(path),
            message: message.into(),
            help: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// A serde/TOML error, with "did you mean" added for misspelt names.
    pub fn from_toml(e: &toml::de::Error) -> Self {
        let message = e.message().trim_end().to_owned();
        let help = suggest(&message);
        Self {
            span: e.span(),
            path: None,
            message,
            help,
        }
    }

    /// `file:line:column: path: message`, the offending line, and the help.
    pub fn render(&self, file: &str, text: &str) -> String {
        let mut out = String::new();
        let location = self.span.as_ref().map(|s| line_col(text, s.start));
        match location {
            Some((line, col)) => out.push_str(&format!("{file}:{line}:{col}: ")),
            None => out.push_str(&format!("{file}: ")),
        }
        if let Some(path) = &self.path {
            out.push_str(&format!("{path}: "));
        }
        out.push_str(&self.message);
        if let Some((line, _)) = location
            && let Some(content) = text.lines().nth(line - 1)
        {
            out.push_str(&format!("\n  {line:>4} | {content}"));
        }
        if let Some(help) = &self.help {
            out.push_str(&format!("\n  help: {help}"));
        }
        out
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// For serde's "unknown field `x`, expected one of `a`, `b`" (and the same
/// for variants), the closest allowed name.
fn suggest(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))?;
    let (given, rest) = rest.split_once('`')?;
    let allowed: Vec<&str> = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| !s.is_empty())
        .collect();
    let best = allowed
        .iter()
        .map(|a| (strsim::damerau_levenshtein(given, a), *a))
        .min()
        .filter(|(d, a)| *d <= 2.max(a.len() / 3))
        .map(|(_, a)| a);
    match best {
        Some(a) => Some(format!("did you mean `{a}`?")),
        None if !allowed.is_empty() => Some(format!(
            "allowed here: {}",
            allowed
                .iter()
                .map(|a| format!("`{a}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_closest_allowed_name() {
        let m = "unknown field `tpoics`, expected one of `type`, `brokers`, `topics`, `group`";
        assert_eq!(suggest(m).as_deref(), Some("did you mean `topics`?"));
        let m = "unknown variant `hsett`, expected one of `set`, `hset`, `xadd`";
        assert_eq!(suggest(m).as_deref(), Some("did you mean `hset`?"));
        let m = "unknown variant `postgres`, expected `kafka` or `generate`";
        assert_eq!(
            suggest(m).as_deref(),
            Some("allowed here: `kafka`, `generate`")
        );
        assert_eq!(suggest("missing field `name`"), None);
    }

    #[test]
    fn renders_file_line_column_and_the_line() {
        let text = "a = 1\nbad = 2\n";
        let p = Problem::at_span(
            6..9,
            "unknown field `bad`",
            Some("did you mean `bat`?".into()),
        );
        assert_eq!(
            p.render("c.toml", text),
            "c.toml:2:1: unknown field `bad`\n     2 | bad = 2\n  help: did you mean `bat`?"
        );
    }
}
