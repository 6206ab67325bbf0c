//! The JSON Schema files of mgm's socket protocols (`docs/module-protocol.schema.json`,
//! `docs/control-schema.json`), generated from their message types, one way for both.

use schemars::{generate::SchemaGenerator, Schema};

/// A draft 2020-12 schema: a message is one of the schemas `roots` makes with the generator,
/// and every type they use goes under `$defs`. Pretty-printed with a final newline, as the
/// files are committed.
pub fn document(
    title: &str,
    description: &str,
    roots: impl FnOnce(&mut SchemaGenerator) -> Vec<Schema>,
) -> String {
    let mut generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let one_of = roots(&mut generator);
    let doc = serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": title,
        "description": description,
        "oneOf": one_of,
        "$defs": generator.take_definitions(true),
    });
    format!(
        "{}\n",
        serde_json::to_string_pretty(&doc).unwrap_or_default()
    )
}

/// Asserts that the committed `file` (a path under the crate) is `now`; with `MGM_WRITE_SCHEMA`
/// set it writes `now` there first. `test` is the name of the test that calls it, for the
/// message saying how to regenerate the file.
#[cfg(test)]
pub fn assert_committed(file: &str, now: &str, test: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    if std::env::var_os("MGM_WRITE_SCHEMA").is_some() {
        std::fs::write(&path, now).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == now,
        "{} is stale: run MGM_WRITE_SCHEMA=1 cargo test -p mgm-user {test}",
        path.display()
    );
}
