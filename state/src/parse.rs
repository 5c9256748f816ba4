//! User input to storable objects: YAML or JSON text as `kubectl get -o yaml|json`
//! prints it (single objects, `kind: List` / `ServiceList` with `items`,
//! multi-document YAML), each object checked by `object::decode` and keyed.

use std::fmt;

use serde_json::Value;

use crate::object::{self, DecodeError};
use crate::store::{Kind, ObjectKey};

/// Where an object came from, for error messages: file, 1-based document
/// number and the line the document starts on, plus the index inside a List.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRef {
    pub file: String,
    pub document: usize,
    pub line: usize,
    pub item: Option<usize>,
}

impl fmt::Display for SourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: document {} (line {})",
            self.file, self.document, self.line
        )?;
        if let Some(i) = self.item {
            write!(f, ", items[{i}]")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error("{file}: line {line}: {message}")]
    Syntax {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{at}: {reason}")]
    Invalid { at: SourceRef, reason: String },
}

/// One object ready for `Store::put`.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedObject {
    pub key: ObjectKey,
    /// The object as given, with `apiVersion`/`kind`/`metadata.namespace`
    /// filled in and `metadata.managedFields` dropped.
    pub value: Value,
    pub source: SourceRef,
    /// Reasons consumers will not use it (e.g. an EndpointSlice without a
    /// Service label); the object is still valid to store.
    pub warnings: Vec<String>,
}

/// Parse every object in `text`; `file` names the input in errors (`-` for stdin).
pub fn parse_objects(text: &str, file: &str) -> Result<Vec<ParsedObject>, ParseError> {
    let mut out = Vec::new();
    for (doc_index, (line, value)) in documents(text, file)?.into_iter().enumerate() {
        let at = SourceRef {
            file: file.to_string(),
            document: doc_index + 1,
            line,
            item: None,
        };
        expand(value, at, &mut out)?;
    }
    Ok(out)
}

/// Splits `text` into documents and parses each, returning (start line, value).
/// JSON input (first character `{` or `[`) is one document.
fn documents(text: &str, file: &str) -> Result<Vec<(usize, Value)>, ParseError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let first_line = text[..text.len() - trimmed.len()].matches('\n').count() + 1;
        let v: Value = serde_json::from_str(text).map_err(|e| ParseError::Syntax {
            file: file.to_string(),
            line: e.line(),
            message: e.to_string(),
        })?;
        return Ok(match v {
            Value::Array(items) => items.into_iter().map(|v| (first_line, v)).collect(),
            v => vec![(first_line, v)],
        });
    }
    let mut docs = Vec::new();
    for (start, chunk) in split_yaml(text) {
        let meaningful = chunk.lines().any(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#') && !t.starts_with('%') && t != "..."
        });
        if !meaningful {
            continue;
        }
        let v: Value = serde_yaml::from_str(&chunk).map_err(|e| ParseError::Syntax {
            file: file.to_string(),
            line: start + e.location().map(|l| l.line()).unwrap_or(1) - 1,
            message: shift_lines(&e.to_string(), start - 1),
        })?;
        if v.is_null() {
            continue;
        }
        // Where the document's first content line is, for messages.
        let offset = chunk
            .lines()
            .position(|l| {
                let t = l.trim();
                !t.is_empty() && !t.starts_with('#')
            })
            .unwrap_or(0);
        docs.push((start + offset, v));
    }
    Ok(docs)
}

/// serde_yaml numbers lines within the document it was given; make every
/// "line N" in its message a line of the whole file.
fn shift_lines(msg: &str, offset: usize) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find("line ") {
        out.push_str(&rest[..i + 5]);
        rest = &rest[i + 5..];
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        match rest[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&(n + offset).to_string()),
            Err(_) => out.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

/// YAML documents as (1-based line of the chunk's first line, chunk text).
/// The `---` marker line is blanked (its remainder, if any, kept) so that
/// line numbers inside a chunk stay those of the file.
fn split_yaml(text: &str) -> Vec<(usize, String)> {
    let mut chunks = Vec::new();
    let mut cur = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        let is_marker = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        if is_marker {
            chunks.push((start, std::mem::take(&mut cur)));
            start = i + 1;
            cur.push_str(&line[3..]);
            cur.push('\n');
        } else if line == "..." {
            cur.push('\n');
        } else {
            cur.push_str(line);
            cur.push('\n');
        }
    }
    chunks.push((start, cur));
    chunks
}

fn expand(value: Value, at: SourceRef, out: &mut Vec<ParsedObject>) -> Result<(), ParseError> {
    let invalid = |at: &SourceRef, reason: String| ParseError::Invalid {
        at: at.clone(),
        reason,
    };
    let Value::Object(map) = &value else {
        return Err(invalid(
            &at,
            format!("expected an object, found {}", kind_of(&value)),
        ));
    };
    let kind_name = map.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    if kind_name.is_empty() {
        return Err(invalid(&at, "object has no `kind`".to_string()));
    }
    if let Some(element_kind) = kind_name.strip_suffix("List") {
        let Some(Value::Array(items)) = map.get("items") else {
            return Err(invalid(&at, format!("{kind_name} has no `items` array")));
        };
        for (i, item) in items.iter().enumerate() {
            let mut item = item.clone();
            // `kubectl get -o yaml` items carry kind; raw API lists (`ServiceList`) do not.
            if let Value::Object(m) = &mut item {
                if !element_kind.is_empty() && !m.contains_key("kind") {
                    m.insert("kind".into(), Value::String(element_kind.to_string()));
                }
            }
            let item_at = SourceRef {
                item: Some(i),
                ..at.clone()
            };
            expand(item, item_at, out)?;
        }
        return Ok(());
    }
    let kind = Kind::ALL
        .into_iter()
        .find(|k| k.kind_name() == kind_name)
        .ok_or_else(|| {
            invalid(
                &at,
                format!(
                    "unsupported kind {kind_name:?}; podnet stores {}",
                    Kind::ALL.map(|k| k.kind_name()).join(", ")
                ),
            )
        })?;
    let obj = normalize(kind, value).map_err(|reason| invalid(&at, reason))?;
    let mut warnings = Vec::new();
    match object::decode(kind, &obj.1) {
        Ok(_) => {}
        Err(DecodeError::Ignored { reason, .. }) => {
            warnings.push(format!("{} {}: {reason}", kind.kind_name(), obj.0))
        }
        Err(e @ DecodeError::Invalid { .. }) => return Err(invalid(&at, e.to_string())),
    }
    out.push(ParsedObject {
        key: obj.0,
        value: obj.1,
        source: at,
        warnings,
    });
    Ok(())
}

/// Fills in apiVersion and namespace, drops server bookkeeping, computes the key.
pub fn normalize(kind: Kind, mut value: Value) -> Result<(ObjectKey, Value), String> {
    let map = value
        .as_object_mut()
        .ok_or_else(|| "expected an object".to_string())?;
    map.entry("apiVersion")
        .or_insert_with(|| Value::String(object::api_version(kind).to_string()));
    map.insert("kind".into(), Value::String(kind.kind_name().to_string()));
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    let meta = meta
        .as_object_mut()
        .ok_or_else(|| "metadata is not an object".to_string())?;
    let name = match meta.get("name") {
        Some(Value::String(n)) if !n.is_empty() => n.clone(),
        Some(Value::String(_)) | None => {
            return Err(format!("{} has no metadata.name", kind.kind_name()))
        }
        Some(v) => return Err(format!("metadata.name is {}, not a string", kind_of(v))),
    };
    object::check_object_name(&name).map_err(|e| format!("metadata.name: {e}"))?;
    // managedFields describe writes to another API server; meaningless here.
    meta.remove("managedFields");
    let namespace = if kind.namespaced() {
        let ns = match meta.get("namespace") {
            Some(Value::String(ns)) if !ns.is_empty() => ns.clone(),
            _ => "default".to_string(),
        };
        object::check_object_name(&ns).map_err(|e| format!("metadata.namespace: {e}"))?;
        meta.insert("namespace".into(), Value::String(ns.clone()));
        Some(ns)
    } else {
        meta.remove("namespace");
        None
    };
    Ok((ObjectKey::new(kind, namespace.as_deref(), &name), value))
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn shift_lines_renumbers_every_line_reference() {
        assert_eq!(
            super::shift_lines(
                "bad at line 4 column 1, while parsing at line 3 column 18",
                10
            ),
            "bad at line 14 column 1, while parsing at line 13 column 18"
        );
        assert_eq!(
            super::shift_lines("no lines; line x", 3),
            "no lines; line x"
        );
    }
}
