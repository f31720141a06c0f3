//! Config errors that name the file, the line, the field and what to write.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use super::document::ConfigPath;

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

/// Everything wrong with one config file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub text: String,
    pub problems: Vec<Problem>,
}

impl ConfigError {
    pub fn io(file: PathBuf, e: std::io::Error) -> Self {
        Self {
            problems: vec![Problem {
                span: None,
                path: None,
                message: format!("cannot read the config file: {e}"),
                help: None,
            }],
            file,
            text: String::new(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display().to_string();
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {}", p.render(&file, &self.text))?;
        }
        Ok(())
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
