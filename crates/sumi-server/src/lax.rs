//! Lenient field readers, as pydantic's coercion: numbers may come as numeric strings, integers as
//! integral floats, booleans as 0/1 or "true"/"false"; `null` reads as "not given".

use serde::{Deserialize, Deserializer};
use serde_json::Value;

fn type_err<E: serde::de::Error>(want: &str, got: &Value) -> E {
    E::custom(format!("expected {want}, got {got}"))
}

/// An optional integer.
pub fn int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v = Value::deserialize(d)?;
    match &v {
        Value::Null => Ok(None),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i))
            } else {
                match n.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Some(f as i64)),
                    _ => Err(type_err("an integer", &v)),
                }
            }
        }
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| type_err("an integer", &v)),
        Value::Bool(b) => Ok(Some(i64::from(*b))),
        _ => Err(type_err("an integer", &v)),
    }
}

/// An optional number.
pub fn float<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let v = Value::deserialize(d)?;
    match &v {
        Value::Null => Ok(None),
        Value::Number(n) => n.as_f64().map(Some).ok_or_else(|| type_err("a number", &v)),
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .map(Some)
            .map_err(|_| type_err("a number", &v)),
        _ => Err(type_err("a number", &v)),
    }
}

/// An optional boolean.
pub fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    let v = Value::deserialize(d)?;
    match &v {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        Value::Number(n) if n.as_i64() == Some(0) => Ok(Some(false)),
        Value::Number(n) if n.as_i64() == Some(1) => Ok(Some(true)),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Some(true)),
            "false" | "0" | "no" | "off" => Ok(Some(false)),
            _ => Err(type_err("a boolean", &v)),
        },
        _ => Err(type_err("a boolean", &v)),
    }
}

/// An optional string (numbers are written out, as pydantic v1 does).
pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Value::deserialize(d)?;
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        Value::Number(n) => Ok(Some(n.to_string())),
        other => Err(type_err("a string", &other)),
    }
}

/// An optional list of strings.
pub fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let v = Value::deserialize(d)?;
    match v {
        Value::Null => Ok(None),
        Value::Array(items) => items
            .into_iter()
            .map(|i| match i {
                Value::String(s) => Ok(s),
                other => Err(type_err("a list of strings", &other)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        other => Err(type_err("a list of strings", &other)),
    }
}
