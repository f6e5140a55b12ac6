//! The little JSON the protocol needs. Objects are written by hand so their
//! fields come out in the documented order whatever features serde_json is
//! built with, and a `list` of many rows builds no tree; lines are read with
//! serde_json and picked apart field by field so an error can name the field.

use std::fmt::{self, Write};
use std::net::SocketAddr;

use serde_json::{Map, Value};

use crate::addr;

/// One JSON object being written.
pub(crate) struct Object<'a> {
    out: &'a mut String,
    empty: bool,
}

impl<'a> Object<'a> {
    pub(crate) fn open(out: &'a mut String) -> Object<'a> {
        out.push('{');
        Object { out, empty: true }
    }

    fn key(&mut self, key: &str) -> &mut String {
        if !self.empty {
            self.out.push(',');
        }
        self.empty = false;
        push_str(self.out, key);
        self.out.push(':');
        self.out
    }

    pub(crate) fn str(&mut self, key: &str, value: &str) -> &mut Self {
        push_str(self.key(key), value);
        self
    }

    /// A string written from `Display`, so a typed reason is formatted only here.
    pub(crate) fn display(&mut self, key: &str, value: impl fmt::Display) -> &mut Self {
        self.str(key, &value.to_string())
    }

    pub(crate) fn addr(&mut self, key: &str, value: SocketAddr) -> &mut Self {
        self.str(key, &addr::to_wire(value))
    }

    pub(crate) fn u64(&mut self, key: &str, value: u64) -> &mut Self {
        // Writing to a String cannot fail.
        let _ = write!(self.key(key), "{value}");
        self
    }

    pub(crate) fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key).push_str(if value { "true" } else { "false" });
        self
    }

    /// A value already written as JSON (an array of objects, say).
    pub(crate) fn raw(&mut self, key: &str, json: &str) -> &mut Self {
        self.key(key).push_str(json);
        self
    }

    pub(crate) fn close(self) {
        self.out.push('}');
    }
}

/// A JSON string literal: quotes, backslashes and control characters escaped.
fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// What is wrong with one field of a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FieldError {
    Missing,
    Invalid(&'static str),
}

/// A parsed line's fields, read by name.
pub(crate) struct Fields<'a>(pub(crate) &'a Map<String, Value>);

impl<'a> Fields<'a> {
    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        // `null` is treated as absent: a client may write optional fields so.
        self.0.get(key).filter(|v| !v.is_null())
    }

    pub(crate) fn str(&self, key: &str) -> Result<&'a str, FieldError> {
        self.opt(key, Value::as_str, "a string")?
            .ok_or(FieldError::Missing)
    }

    pub(crate) fn bool(&self, key: &str) -> Result<bool, FieldError> {
        self.opt_bool(key)?.ok_or(FieldError::Missing)
    }

    pub(crate) fn opt_bool(&self, key: &str) -> Result<Option<bool>, FieldError> {
        self.opt(key, Value::as_bool, "true or false")
    }

    pub(crate) fn u64(&self, key: &str) -> Result<u64, FieldError> {
        self.opt_u64(key)?.ok_or(FieldError::Missing)
    }

    pub(crate) fn opt_u64(&self, key: &str) -> Result<Option<u64>, FieldError> {
        self.opt(key, Value::as_u64, "a non-negative integer")
    }

    pub(crate) fn addr(&self, key: &str) -> Result<SocketAddr, FieldError> {
        addr::from_wire(self.str(key).map_err(|e| match e {
            FieldError::Missing => FieldError::Missing,
            FieldError::Invalid(_) => FieldError::Invalid("ADDR:PORT"),
        })?)
        .ok_or(FieldError::Invalid("ADDR:PORT"))
    }

    /// A string field that must be one of a fixed set of words.
    pub(crate) fn word<T>(
        &self,
        key: &str,
        parse: impl Fn(&str) -> Option<T>,
        expected: &'static str,
    ) -> Result<Option<T>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .and_then(parse)
                .map(Some)
                .ok_or(FieldError::Invalid(expected)),
        }
    }

    fn opt<T>(
        &self,
        key: &str,
        read: impl Fn(&'a Value) -> Option<T>,
        expected: &'static str,
    ) -> Result<Option<T>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => read(v).map(Some).ok_or(FieldError::Invalid(expected)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_so_serde_reads_them_back() {
        let nasty = "a \"quoted\" \\ back\nslash\u{1}\u{7f} é";
        let mut out = String::new();
        let mut o = Object::open(&mut out);
        o.str("k", nasty);
        o.close();
        let v: Value = serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(v["k"], nasty);
    }

    #[test]
    fn fields_come_out_in_the_order_written() {
        let mut out = String::new();
        let mut o = Object::open(&mut out);
        o.u64("v", 1).bool("ok", true).str("b", "x").raw("a", "[]");
        o.close();
        assert_eq!(out, r#"{"v":1,"ok":true,"b":"x","a":[]}"#);
    }
}
