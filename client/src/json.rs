//! Conversions between JSON values and `google.protobuf.Struct` (task and job metadata).

use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Value};

use crate::Error;

/// A JSON object as a `Struct`; anything else is refused.
pub fn json_to_struct(v: &serde_json::Value) -> Result<Struct, Error> {
    match v {
        serde_json::Value::Object(m) => {
            Ok(Struct { fields: m.iter().map(|(k, v)| (k.clone(), json_to_value(v))).collect() })
        }
        other => Err(Error::InvalidArgument(format!("metadata: must be a JSON object, not {other}"))),
    }
}

fn json_to_value(v: &serde_json::Value) -> Value {
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(ListValue { values: a.iter().map(json_to_value).collect() }),
        serde_json::Value::Object(m) => {
            Kind::StructValue(Struct { fields: m.iter().map(|(k, v)| (k.clone(), json_to_value(v))).collect() })
        }
    };
    Value { kind: Some(kind) }
}

/// A `Struct` as a JSON object.
pub fn struct_to_json(s: &Struct) -> serde_json::Value {
    serde_json::Value::Object(s.fields.iter().map(|(k, v)| (k.clone(), value_to_json(v))).collect())
}

fn value_to_json(v: &Value) -> serde_json::Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::NumberValue(n)) => {
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                serde_json::Value::from(*n as i64)
            } else {
                serde_json::Number::from_f64(*n).map(serde_json::Value::Number).unwrap_or(serde_json::Value::Null)
            }
        }
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::ListValue(l)) => serde_json::Value::Array(l.values.iter().map(value_to_json).collect()),
        Some(Kind::StructValue(s)) => struct_to_json(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let v = serde_json::json!({"a": 1, "b": [true, null, "x", 2.5], "c": {"d": "e"}});
        assert_eq!(struct_to_json(&json_to_struct(&v).unwrap()), v);
        assert!(json_to_struct(&serde_json::json!([1])).is_err());
    }
}
