//! The config file as parsed TOML, before it is turned into types.
//!
//! Keeping the parsed document (with the byte span of every value) lets
//! every later error point at a line: serde errors carry spans already, and
//! validation errors carry a [`ConfigPath`] that [`Document::span_of`] turns
//! back into a span. Environment variables are substituted here, inside
//! string values only, so a secret can never change the file's structure
//! and the spans stay those of the file the user wrote.

use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

use crate::problem::{ConfigPath, Problem, Segment};

/// A parsed config file with environment variables substituted.
pub(crate) struct Document<'i> {
    root: Spanned<DeTable<'i>>,
    /// The document as written (before [`Document::lift_type_tags`]), for
    /// turning config paths into spans.
    as_written: Spanned<DeTable<'i>>,
}

impl<'i> Document<'i> {
    /// Parses TOML text and substitutes `${VAR}` in every string value.
    pub(crate) fn parse(
        text: &'i str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Vec<Problem>> {
        let mut root = DeTable::parse(text).map_err(|e| vec![Problem::from_toml(&e)])?;
        let mut problems = Vec::new();
        for (_, value) in root.get_mut().iter_mut() {
            substitute(value, env, &mut problems);
        }
        if problems.is_empty() {
            let as_written = root.clone();
            Ok(Self { root, as_written })
        } else {
            Err(problems)
        }
    }

    /// Rewrites every table at `pattern` (keys, with `*` for "every array
    /// element") from `{ type = "kafka", brokers = ... }` into
    /// `{ kafka = { brokers = ... } }`, keeping every span.
    ///
    /// serde's own `#[serde(tag = "type")]` buffers the table and loses the
    /// position of each field, so an error inside a connector's settings
    /// would only point at the start of its table. As an externally tagged
    /// enum, every field error keeps its exact line and column.
    ///
    /// With `into`, settings common to every connector (`keep`, such as a
    /// sink's `name`) stay where they are and the enum goes under `into`:
    /// `{ name = "db", connector = { redis = { url = ... } } }`.
    pub(crate) fn lift_type_tags(&mut self, lift: &Lift) -> Vec<Problem> {
        let mut problems = Vec::new();
        let root = self.root.get_mut();
        if let Some((first, rest)) = lift.pattern.split_first()
            && let Some(value) = root.get_mut(*first)
        {
            lift_at(value, rest, lift, &mut problems);
        }
        problems
    }

    /// Deserializes the whole document into `T`; serde errors keep their spans.
    pub(crate) fn deserialize<T: DeserializeOwned>(&self) -> Result<T, Problem> {
        let de = toml::de::Deserializer::from(self.root.clone());
        T::deserialize(de).map_err(|e| Problem::from_toml(&e))
    }

    /// Removes the setting that the byte offset `at` falls in (the
    /// innermost one), so that parsing can go on past a setting serde
    /// refused; returns its name.
    pub(crate) fn remove_at(&mut self, at: usize) -> Option<String> {
        remove_containing(self.root.get_mut(), at)
    }

    /// The span of the value at `path`, or of its nearest ancestor that
    /// exists (a missing field points at the table that should hold it).
    pub(crate) fn span_of(&self, path: &ConfigPath) -> Option<Range<usize>> {
        let mut span = None;
        let mut table = Some(self.as_written.get_ref());
        let mut value: Option<&Spanned<DeValue<'_>>> = None;
        for seg in path.segments() {
            let next = match (seg, table, value.map(Spanned::get_ref)) {
                (Segment::Key(k), Some(t), _) => t.get(k.as_str()),
                (Segment::Key(k), None, Some(DeValue::Table(t))) => t.get(k.as_str()),
                (Segment::Index(i), None, Some(DeValue::Array(a))) => a.get(*i),
                _ => None,
            };
            match next {
                Some(v) => {
                    span = Some(v.span());
                    value = Some(v);
                    table = None;
                }
                None => break,
            }
        }
        span
    }
}

/// Removes the innermost entry (or table in an array of tables) whose key
/// or value holds the offset `at`, and returns its name. Every table is
/// searched: the span of an array of tables need not cover its tables.
fn remove_containing(table: &mut DeTable<'_>, at: usize) -> Option<String> {
    let mut holder = None;
    for (k, v) in table.iter_mut() {
        let inner = match v.get_mut() {
            DeValue::Table(t) => remove_containing(t, at),
            DeValue::Array(items) => remove_from_array(items, at, k.get_ref()),
            _ => None,
        };
        if inner.is_some() {
            return inner;
        }
        if holder.is_none() && (k.span().contains(&at) || v.span().contains(&at)) {
            holder = Some(k.get_ref().to_string());
        }
    }
    let key = holder?;
    table.remove(key.as_str()).map(|_| key)
}

fn remove_from_array(items: &mut DeArray<'_>, at: usize, name: &str) -> Option<String> {
    let mut drop_at = None;
    for (i, item) in items.iter_mut().enumerate() {
        let span = item.span();
        if let DeValue::Table(t) = item.get_mut() {
            if let Some(inner) = remove_containing(t, at) {
                return Some(inner);
            }
            if span.contains(&at) {
                drop_at = Some(i);
                break;
            }
        }
    }
    let i = drop_at?;
    let all = std::mem::replace(items, DeArray::from_iter(std::iter::empty()));
    *items = all
        .into_iter()
        .enumerate()
        .filter_map(|(j, v)| (j != i).then_some(v))
        .collect();
    Some(format!("{name}[{i}]"))
}

/// Where connector tables sit, and how to lift them (see
/// [`Document::lift_type_tags`]).
pub(crate) struct Lift {
    /// Keys from the root; `*` is every element of an array.
    pub pattern: &'static [&'static str],
    /// Settings common to all connectors, left in place.
    pub keep: &'static [&'static str],
    /// The key the connector enum goes under, if not in place.
    pub into: Option<&'static str>,
}

fn lift_at(
    value: &mut Spanned<DeValue<'_>>,
    pattern: &[&str],
    lift: &Lift,
    problems: &mut Vec<Problem>,
) {
    let Some((first, rest)) = pattern.split_first() else {
        lift_one(value, lift, problems);
        return;
    };
    match (value.get_mut(), *first) {
        (DeValue::Array(items), "*") => {
            for item in items.iter_mut() {
                lift_at(item, rest, lift, problems);
            }
        }
        (DeValue::Table(table), key) => {
            if let Some(v) = table.get_mut(key) {
                lift_at(v, rest, lift, problems);
            }
        }
        _ => {}
    }
}

fn lift_one(value: &mut Spanned<DeValue<'_>>, lift: &Lift, problems: &mut Vec<Problem>) {
    let span = value.span();
    let DeValue::Table(table) = value.get_mut() else {
        return; // serde reports the wrong type
    };
    let Some(tag) = table.remove("type") else {
        problems.push(Problem::at_span(
            span,
            "missing `type`",
            Some("say which connector this is, e.g. type = \"kafka\" or type = \"redis\"".into()),
        ));
        return;
    };
    let tag_span = tag.span();
    let DeValue::String(kind) = tag.into_inner() else {
        problems.push(Problem::at_span(tag_span, "`type` must be a string", None));
        return;
    };
    let mut kept = DeTable::new();
    for key in lift.keep {
        if let Some((k, v)) = table.remove_entry(*key) {
            kept.insert(k, v);
        }
    }
    let rest = std::mem::take(table);
    let mut tagged = DeTable::new();
    tagged.insert(
        Spanned::new(tag_span.clone(), kind),
        Spanned::new(span.clone(), DeValue::Table(rest)),
    );
    let lifted = match lift.into {
        None => tagged,
        Some(into) => {
            kept.insert(
                Spanned::new(tag_span, into.into()),
                Spanned::new(span.clone(), DeValue::Table(tagged)),
            );
            kept
        }
    };
    *value = Spanned::new(span, DeValue::Table(lifted));
}

fn substitute(
    value: &mut Spanned<DeValue<'_>>,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) {
    let span = value.span();
    match value.get_mut() {
        DeValue::String(s) if s.contains('$') => match expand(s, env) {
            Ok(expanded) => *s = expanded.into(),
            Err(message) => problems.push(Problem::at_span(span, message, None)),
        },
        DeValue::Array(items) => {
            for item in items.iter_mut() {
                substitute(item, env, problems);
            }
        }
        DeValue::Table(table) => {
            for (_, v) in table.iter_mut() {
                substitute(v, env, problems);
            }
        }
        _ => {}
    }
}

/// Expands `${VAR}`, `${VAR:-default}` and `${file:/path}` (the content of
/// a file, without its trailing newline: a mounted secret); `$${` is a
/// literal `${`. Errors name the variable or file, never a value.
pub(crate) fn expand(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unclosed `${{` in \"{s}\" (write `$${{` for a literal)"))?;
            let inner = &body[..end];
            if let Some(path) = inner.strip_prefix("file:") {
                if path.is_empty() {
                    return Err(
                        "`${file:}` needs a path, e.g. `${file:/run/secrets/password}`".into(),
                    );
                }
                out.push_str(&crate::secret::read_file(std::path::Path::new(path))?);
                rest = &body[end + 1..];
                continue;
            }
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "`${{{inner}}}` is not a valid environment variable reference; \
                     write `${{NAME}}` or `${{NAME:-default}}`"
                ));
            }
            match (env(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable `{name}` is not set; set it, or write \
                         `${{{name}:-default}}` to give a default"
                    ));
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PASSWORD" => Some("s3cr\"et".into()),
            "HOST" => Some("10.0.0.1".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_variables_defaults_and_escapes() {
        assert_eq!(expand("a${HOST}:9092", &env).unwrap(), "a10.0.0.1:9092");
        assert_eq!(expand("${NOPE:-fallback}", &env).unwrap(), "fallback");
        assert_eq!(expand("cost $5 $${HOST}", &env).unwrap(), "cost $5 ${HOST}");
        assert!(
            expand("${NOPE}", &env)
                .unwrap_err()
                .contains("`NOPE` is not set")
        );
        assert!(expand("${HOST", &env).unwrap_err().contains("unclosed"));
        assert!(expand("${a b}", &env).unwrap_err().contains("not a valid"));
    }

    #[test]
    fn file_references_read_the_file_without_its_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").unwrap();
        let text = format!("a = \"${{file:{}}}\"", path.display());
        assert_eq!(expand(&text, &env).unwrap(), "a = \"s3cret\"");
        let missing = format!("${{file:{}/nope}}", dir.path().display());
        let e = expand(&missing, &env).unwrap_err();
        assert!(
            e.contains("cannot read the secret file") && e.contains("nope"),
            "{e}"
        );
        assert!(
            expand("${file:}", &env)
                .unwrap_err()
                .contains("needs a path")
        );
    }

    #[test]
    fn substitution_cannot_change_the_structure_of_the_file() {
        let text = "[a]\npassword = \"${PASSWORD}\"\n";
        let doc = Document::parse(text, &env).unwrap();
        let v: toml::Table = doc.deserialize().unwrap();
        assert_eq!(v["a"]["password"].as_str(), Some("s3cr\"et"));
    }

    #[test]
    fn an_unset_variable_points_at_its_line() {
        let text = "[a]\nx = 1\npassword = \"${NOPE}\"\n";
        let problems = Document::parse(text, &env).err().unwrap();
        assert_eq!(problems.len(), 1);
        let rendered = problems[0].render("f.toml", text);
        assert!(rendered.starts_with("f.toml:3:"), "{rendered}");
    }

    #[test]
    fn type_tags_are_lifted_into_enum_form_with_spans_kept() {
        let text = "[[p]]\ns = { type = \"kafka\", b = 1 }\n[[p]]\ns = { b = 2 }\n";
        let mut doc = Document::parse(text, &env).unwrap();
        let lift = Lift {
            pattern: &["p", "*", "s"],
            keep: &["name"],
            into: None,
        };
        let problems = doc.lift_type_tags(&lift);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].message.contains("missing `type`"));
        let v: toml::Table = doc.deserialize().unwrap();
        assert_eq!(v["p"][0]["s"]["kafka"]["b"].as_integer(), Some(1));
    }

    #[test]
    fn common_settings_stay_and_the_connector_goes_under_its_key() {
        let text = "[[p]]\ns = { type = \"redis\", name = \"db\", url = \"u\" }\n";
        let mut doc = Document::parse(text, &env).unwrap();
        let lift = Lift {
            pattern: &["p", "*", "s"],
            keep: &["name"],
            into: Some("connector"),
        };
        assert!(doc.lift_type_tags(&lift).is_empty());
        let v: toml::Table = doc.deserialize().unwrap();
        assert_eq!(v["p"][0]["s"]["name"].as_str(), Some("db"));
        assert_eq!(
            v["p"][0]["s"]["connector"]["redis"]["url"].as_str(),
            Some("u")
        );
    }

    #[test]
    fn paths_resolve_to_spans_of_the_nearest_existing_value() {
        let text = "[[pipeline]]\nname = \"a\"\n[[pipeline.sink]]\nkey = \"k\"\n";
        let doc = Document::parse(text, &env).unwrap();
        let p = ConfigPath::root()
            .key("pipeline")
            .index(0)
            .key("sink")
            .index(0);
        let span = doc.span_of(&p.key("key")).unwrap();
        assert_eq!(&text[span], "\"k\"");
        let missing = doc.span_of(&p.key("url")).unwrap();
        assert_eq!(
            &text[missing], "[[pipeline.sink]]",
            "the table that lacks it"
        );
        assert_eq!(p.key("url").to_string(), "pipeline[0].sink[0].url");
    }
}
