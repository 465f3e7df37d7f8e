//! The JSON Schema of `cargo xtask check --json`, generated from the types
//! `check` serialises (schemars: their doc comments are the descriptions),
//! and a page that shows it as tables. `docs --check` keeps both in step
//! with the code; a test validates real `check --json` output against it.

use std::fmt::Write as _;

use serde_json::Value;

use crate::report::{CheckReport, SCHEMA};

/// The schema file, relative to docs/reference/.
pub const SCHEMA_FILE: &str = "check.schema.json";
/// The page that shows it.
pub const SCHEMA_PAGE: &str = "check-json.md";

/// The schema, as JSON (draft 2020-12).
pub fn check_schema() -> Value {
    serde_json::to_value(schemars::schema_for!(CheckReport)).unwrap_or(Value::Null)
}

/// The schema file's text.
pub fn schema_file() -> String {
    let mut text = serde_json::to_string_pretty(&check_schema()).unwrap_or_default();
    text.push('\n');
    text
}

/// The page: one table per object of the document, fields in alphabetical
/// order, each with its type and its meaning.
pub fn schema_page(banner: &str) -> String {
    let schema = check_schema();
    let mut out = banner.to_owned();
    let _ = writeln!(out, "\n# `cargo xtask check --json`, field by field\n");
    let _ = writeln!(
        out,
        "The document of schema version **{SCHEMA}**, generated from the types `check` serialises; the same as a JSON Schema: [{SCHEMA_FILE}]({SCHEMA_FILE}). What the document means and how it is versioned: [docs/check-json.md](../check-json.md).\n"
    );
    let title = schema["title"].as_str().unwrap_or("CheckReport");
    definition(&mut out, title, &schema);
    if let Some(definitions) = schema["$defs"].as_object() {
        for (name, definition_schema) in definitions {
            definition(&mut out, name, definition_schema);
        }
    }
    out
}

/// One definition: an object's fields, or the variants of a choice.
fn definition(out: &mut String, name: &str, schema: &Value) {
    let _ = writeln!(out, "## {name}\n");
    if let Some(description) = schema["description"].as_str() {
        let _ = writeln!(out, "{}\n", one_line(description));
    }
    if let Some(variants) = schema["oneOf"].as_array() {
        for variant in variants {
            match &variant["const"] {
                Value::String(value) => {
                    let _ = writeln!(
                        out,
                        "- `\"{value}\"`: {}",
                        one_line(variant["description"].as_str().unwrap_or(""))
                    );
                }
                _ => {
                    let _ = writeln!(
                        out,
                        "- {}: {}\n",
                        tag(variant),
                        one_line(variant["description"].as_str().unwrap_or(""))
                    );
                    fields(out, variant, true);
                }
            }
        }
        out.push('\n');
    } else {
        fields(out, schema, false);
    }
}

/// The tag of a variant of an internally tagged enum: `"status": "ran"`.
fn tag(variant: &Value) -> String {
    variant["properties"]
        .as_object()
        .and_then(|properties| {
            properties.iter().find_map(|(field, property)| {
                property["const"]
                    .as_str()
                    .map(|value| format!("`\"{field}\": \"{value}\"`"))
            })
        })
        .unwrap_or_else(|| "a variant".to_owned())
}

fn fields(out: &mut String, schema: &Value, skip_tags: bool) {
    let Some(properties) = schema["properties"].as_object() else {
        return;
    };
    let rows: Vec<(&String, &Value)> = properties
        .iter()
        .filter(|(_, property)| !(skip_tags && property.get("const").is_some()))
        .collect();
    if rows.is_empty() {
        return;
    }
    out.push_str("| field | type | meaning |\n|---|---|---|\n");
    for (field, property) in rows {
        let _ = writeln!(
            out,
            "| `{field}` | {} | {} |",
            type_of(property),
            one_line(property["description"].as_str().unwrap_or("")).replace('|', "\\|")
        );
    }
    out.push('\n');
}

/// A property's type in words, with links to the definitions it names.
fn type_of(schema: &Value) -> String {
    if let Some(target) = schema["$ref"].as_str() {
        let name = target.rsplit('/').next().unwrap_or(target);
        return format!("[{name}](#{})", name.to_lowercase());
    }
    if let Some(choices) = schema["anyOf"].as_array() {
        return choices.iter().map(type_of).collect::<Vec<_>>().join(" or ");
    }
    if let Some(value) = schema["const"].as_str() {
        return format!("`\"{value}\"`");
    }
    let named = |kind: &str| match kind {
        "array" => format!("array of {}", type_of(&schema["items"])),
        "object" if schema.get("additionalProperties").is_some() => {
            format!("object of {}", type_of(&schema["additionalProperties"]))
        }
        "null" => "`null`".to_owned(),
        other => other.to_owned(),
    };
    match &schema["type"] {
        Value::String(kind) => named(kind),
        Value::Array(kinds) => kinds
            .iter()
            .filter_map(Value::as_str)
            .map(named)
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "any".to_owned(),
    }
}

/// A doc comment as one line of a table.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_of_the_document_is_described() {
        let schema = check_schema();
        let mut undescribed = Vec::new();
        let definitions = schema["$defs"].as_object().unwrap();
        for (name, definition) in std::iter::once(("CheckReport", &schema))
            .chain(definitions.iter().map(|(n, d)| (n.as_str(), d)))
        {
            let variants = definition["oneOf"].as_array().cloned().unwrap_or_default();
            for object in std::iter::once(definition).chain(variants.iter()) {
                for (field, property) in object["properties"].as_object().into_iter().flatten() {
                    let tag = property.get("const").is_some();
                    let typed = property.get("$ref").is_some();
                    if !tag && !typed && property["description"].as_str().is_none() {
                        undescribed.push(format!("{name}.{field}"));
                    }
                }
            }
        }
        // Numbers and flags whose name says all; every other field explains itself.
        let plain = [
            "MountRow.device",
            "MountRow.mountpoint",
            "MountRow.needed_for_boot",
            "MountRow.options_in_effect",
            "PartitionRow.size_bytes",
            "PartitionRow.start_bytes",
            "SwapRow.size_bytes",
            "BtrfsTable.subvolumes",
            "Location.column",
            "Location.line",
        ];
        undescribed.retain(|field| !plain.contains(&field.as_str()));
        assert!(undescribed.is_empty(), "{undescribed:?}");
    }

    #[test]
    fn the_page_shows_types_links_and_variants() {
        let page = schema_page("");
        assert!(page.contains("## CheckReport"), "{page}");
        assert!(
            page.contains("| `hosts` | array of [HostReport](#hostreport) | One per checked host, sorted by name. |"),
            "{page}"
        );
        assert!(
            page.contains("| `tables` | [Tables](#tables) or `null` |"),
            "{page}"
        );
        assert!(page.contains("- `\"status\": \"ran\"`:"), "{page}");
        assert!(
            page.contains("- `\"wiped_at_boot\"`: Moved to @old_roots"),
            "{page}"
        );
        assert!(
            page.contains("| `size_bytes` | integer or `null` |"),
            "{page}"
        );
    }
}
