//! Every JSON example in docs/control-protocol.md is read with this crate
//! and written back, and must come out with the same fields and values: the
//! page cannot document a field, word or shape the code does not speak.

use std::collections::BTreeSet;

use serde_json::Value;
use tcpcrypt_control::answer::{
    decode_cleared, decode_flushed, decode_list, decode_lookup, decode_set_policy, decode_version,
};
use tcpcrypt_control::{Answer, AnswerError, Refusal, Request};

fn page() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/control-protocol.md"
    );
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The page's ```json blocks (fences may be indented, inside a list item)
/// and its inline code spans that hold a whole protocol line.
fn examples(page: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut block: Option<String> = None;
    for line in page.lines() {
        let trimmed = line.trim_start();
        match &mut block {
            None if trimmed == "```json" => block = Some(String::new()),
            None => {
                for span in line.split('`').skip(1).step_by(2) {
                    if span.starts_with("{\"v\":") {
                        found.push(span.to_string());
                    }
                }
            }
            Some(_) if trimmed == "```" => found.extend(block.take()),
            Some(text) => {
                text.push_str(trimmed);
                text.push('\n');
            }
        }
    }
    assert!(block.is_none(), "a ```json block is not closed");
    found
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Reads a successful answer with the decoder its fields call for, and
/// writes it back.
fn answer_round_trip(line: &[u8], value: &Value) -> Result<String, AnswerError> {
    let has = |key: &str| value.get(key).is_some();
    Ok(if has("state") {
        Answer::Lookup(decode_lookup(line)?).to_line()
    } else if has("connections") {
        Answer::List(decode_list(line)?).to_line()
    } else if has("daemon") {
        Answer::<String>::Version(decode_version(line)?).to_line()
    } else if has("flushed") {
        Answer::<String>::Flushed(decode_flushed(line)?).to_line()
    } else if has("cleared") {
        Answer::<String>::PolicyCleared(decode_cleared(line)?).to_line()
    } else {
        decode_set_policy(line)?;
        Answer::<String>::PolicySet.to_line()
    })
}

#[test]
fn every_documented_example_reads_and_writes_back_unchanged() {
    let mut ops = BTreeSet::new();
    let mut states = BTreeSet::new();
    let mut answers = 0;
    for text in examples(&page()) {
        let value = json(&text);
        let compact = value.to_string();
        let written = if let Some(op) = value.get("op").and_then(Value::as_str) {
            let request = Request::parse(&compact)
                .unwrap_or_else(|e| panic!("documented request refused ({e:?}): {text}"));
            ops.insert(op.to_string());
            request.encode()
        } else if value.get("ok") == Some(&Value::Bool(true)) {
            answers += 1;
            if let Some(state) = value.get("state").and_then(Value::as_str) {
                states.insert(state.to_string());
            }
            answer_round_trip(compact.as_bytes(), &value)
                .unwrap_or_else(|e| panic!("documented answer not read ({e}): {text}"))
        } else {
            answers += 1;
            match decode_set_policy(compact.as_bytes()) {
                Err(AnswerError::Refused { code, message }) => {
                    Refusal::new(code, message).to_line()
                }
                other => panic!("documented refusal read as {other:?}: {text}"),
            }
        };
        assert_eq!(json(&written), value, "written back differently: {text}");
    }
    let every_op: BTreeSet<String> = [
        "lookup",
        "list",
        "version",
        "flush_resumption",
        "set_policy",
        "clear_policy",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(ops, every_op, "an operation has no request example");
    assert!(
        states.contains("tcpcrypt") && states.contains("plain"),
        "{states:?}"
    );
    assert!(answers >= 8, "only {answers} answer examples found");
}

#[test]
fn examples_are_found_in_blocks_indented_or_not_and_in_inline_spans() {
    let page = "text `{\"v\":1,\"op\":\"list\"}` and `other`\n\
                ```json\n{\"v\":1,\n \"ok\":true}\n```\n  ```json\n  {\"v\":1}\n  ```\n";
    assert_eq!(
        examples(page),
        vec![
            "{\"v\":1,\"op\":\"list\"}".to_string(),
            "{\"v\":1,\n\"ok\":true}\n".to_string(),
            "{\"v\":1}\n".to_string(),
        ]
    );
}
