//! Turning stored bytes back into values for people: every key, namespace and value is shown
//! as hex, and also decoded when its codec is `serde` + `postcard` of a primitive type whose
//! name the codec id records (`SerdeCodec::<T>::new()` names itself `postcard/<type name>`:
//! `postcard/u64`, `postcard/alloc::string::String`, ...).
//!
//! Keys carry no codec id (a checkpoint records the codecs of values, namespaces and map
//! keys, not of the keys a job partitions by), so `--key-type` says how to read them; by
//! default a key that is exactly the postcard encoding of a printable string is shown as one.

use std::fmt::Write as _;
use std::sync::OnceLock;

use clap::builder::PossibleValue;
use clap::ValueEnum;
use flowstate_api::{Codec, SerdeCodec};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// How `inspect` reads keys (`--key-type`): `auto`, `hex`, or as one of the primitives.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum KeyType {
    /// A postcard string when the bytes are exactly one (printable), else hex only.
    Auto,
    /// Hex only.
    Hex,
    /// The postcard encoding of this type.
    Typed(Primitive),
}

/// `--key-type`'s values: `auto`, `hex` and every primitive's name, listed once (in
/// [`Primitive`]).
impl ValueEnum for KeyType {
    fn value_variants<'a>() -> &'a [Self] {
        static ALL: OnceLock<Vec<KeyType>> = OnceLock::new();
        ALL.get_or_init(|| {
            [KeyType::Auto, KeyType::Hex]
                .into_iter()
                .chain(
                    Primitive::value_variants()
                        .iter()
                        .map(|p| KeyType::Typed(*p)),
                )
                .collect()
        })
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        match self {
            KeyType::Auto => Some(PossibleValue::new("auto").help(
                "A postcard string when the bytes are exactly one (printable), else hex only",
            )),
            KeyType::Hex => Some(PossibleValue::new("hex").help("Hex only")),
            KeyType::Typed(primitive) => primitive.to_possible_value(),
        }
    }
}

/// The types `inspect` decodes.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Primitive {
    String,
    Bool,
    Char,
    U8,
    U16,
    U32,
    U64,
    Usize,
    I8,
    I16,
    I32,
    I64,
    Isize,
    F32,
    F64,
}

/// What a codec id names that `inspect` decodes: a primitive, or a tuple of primitives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decodable {
    One(Primitive),
    Tuple(Vec<Primitive>),
}

/// What a `postcard/<type name>` codec id names, when `inspect` can decode it: a primitive
/// (`postcard/u64`) or a tuple of them (`postcard/(u32, u64)`, shown as a JSON array).
pub fn decodable_of_codec(codec: &str) -> Option<Decodable> {
    let type_name = codec.strip_prefix("postcard/")?;
    if let Some(inner) = type_name
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
    {
        let parts = inner
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(primitive_named)
            .collect::<Option<Vec<_>>>()?;
        return (!parts.is_empty()).then_some(Decodable::Tuple(parts));
    }
    primitive_named(type_name).map(Decodable::One)
}

fn primitive_named(type_name: &str) -> Option<Primitive> {
    Some(match type_name {
        "alloc::string::String" | "std::string::String" | "String" => Primitive::String,
        "bool" => Primitive::Bool,
        "char" => Primitive::Char,
        "u8" => Primitive::U8,
        "u16" => Primitive::U16,
        "u32" => Primitive::U32,
        "u64" => Primitive::U64,
        "usize" => Primitive::Usize,
        "i8" => Primitive::I8,
        "i16" => Primitive::I16,
        "i32" => Primitive::I32,
        "i64" => Primitive::I64,
        "isize" => Primitive::Isize,
        "f32" => Primitive::F32,
        "f64" => Primitive::F64,
        _ => return None,
    })
}

/// A key decoded as `key_type` says; `None` when it does not decode (or is hex only).
pub fn decode_key(key_type: KeyType, bytes: &[u8]) -> Option<Value> {
    match key_type {
        KeyType::Auto => match decode(Primitive::String, bytes)? {
            Value::String(s) if !s.is_empty() && !s.chars().any(char::is_control) => {
                Some(Value::String(s))
            }
            _ => None,
        },
        KeyType::Hex => None,
        KeyType::Typed(primitive) => decode(primitive, bytes),
    }
}

/// `bytes` decoded as the type `codec` names, when it names a primitive and the bytes are
/// exactly its postcard encoding.
pub fn decode_with_codec(codec: &str, bytes: &[u8]) -> Option<Value> {
    match decodable_of_codec(codec)? {
        Decodable::One(primitive) => decode(primitive, bytes),
        Decodable::Tuple(parts) => {
            // A tuple is its fields back to back; every primitive's encoding is self-delimiting,
            // so the one prefix that decodes exactly is the field.
            let mut rest = bytes;
            let mut fields = Vec::with_capacity(parts.len());
            for part in parts {
                let (value, len) = (1..=rest.len())
                    .find_map(|len| decode(part, &rest[..len]).map(|v| (v, len)))?;
                fields.push(value);
                rest = &rest[len..];
            }
            rest.is_empty().then_some(Value::Array(fields))
        }
    }
}

/// `bytes` as `primitive`, or `None` unless they are exactly its (canonical) postcard encoding.
pub fn decode(primitive: Primitive, bytes: &[u8]) -> Option<Value> {
    match primitive {
        Primitive::String => exact::<String>(bytes).map(Value::String),
        Primitive::Bool => exact::<bool>(bytes).map(Value::Bool),
        Primitive::Char => exact::<char>(bytes).map(|c| Value::String(c.to_string())),
        Primitive::U8 => exact::<u8>(bytes).map(Value::from),
        Primitive::U16 => exact::<u16>(bytes).map(Value::from),
        Primitive::U32 => exact::<u32>(bytes).map(Value::from),
        Primitive::U64 => exact::<u64>(bytes).map(Value::from),
        Primitive::Usize => exact::<u64>(bytes).map(Value::from),
        Primitive::I8 => exact::<i8>(bytes).map(Value::from),
        Primitive::I16 => exact::<i16>(bytes).map(Value::from),
        Primitive::I32 => exact::<i32>(bytes).map(Value::from),
        Primitive::I64 => exact::<i64>(bytes).map(Value::from),
        Primitive::Isize => exact::<i64>(bytes).map(Value::from),
        Primitive::F32 => exact::<f32>(bytes).map(|f| float(f64::from(f))),
        Primitive::F64 => exact::<f64>(bytes).map(float),
    }
}

/// A float as JSON: a number when finite, else its name (`NaN`, `inf`, `-inf`).
fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or_else(|| Value::String(f.to_string()))
}

/// Decodes `bytes` as `T` and accepts the value only if it encodes back to exactly `bytes`:
/// postcard ignores trailing bytes, and a varint read from a longer field would look valid.
fn exact<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let codec = SerdeCodec::<T>::with_id("inspect");
    let value = codec.decode(bytes).ok()?;
    let again = codec.to_bytes(&value).ok()?;
    (again == bytes).then_some(value)
}

/// Lowercase hex, two digits a byte.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// A decoded value as people read it: strings quoted and escaped, numbers plain.
pub fn show(value: &Value) -> String {
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode<T: Serialize + DeserializeOwned>(value: &T) -> Vec<u8> {
        SerdeCodec::<T>::new().to_bytes(value).unwrap()
    }

    #[test]
    fn codec_ids_of_serde_codecs_name_their_primitive() {
        let one = |p| Some(Decodable::One(p));
        assert_eq!(
            decodable_of_codec(SerdeCodec::<u64>::new().id()),
            one(Primitive::U64)
        );
        assert_eq!(
            decodable_of_codec(SerdeCodec::<String>::new().id()),
            one(Primitive::String)
        );
        assert_eq!(
            decodable_of_codec(SerdeCodec::<f64>::new().id()),
            one(Primitive::F64)
        );
        assert_eq!(decodable_of_codec("bytes"), None);
        assert_eq!(decodable_of_codec("postcard/my::Type"), None);
        assert_eq!(
            decodable_of_codec(SerdeCodec::<(u32, u64)>::new().id()),
            Some(Decodable::Tuple(vec![Primitive::U32, Primitive::U64]))
        );
        assert_eq!(decodable_of_codec("postcard/(u32, Vec<u8>)"), None);
    }

    #[test]
    fn values_decode_only_when_exact() {
        let id = SerdeCodec::<u64>::new().id().to_string();
        assert_eq!(decode_with_codec(&id, &encode(&300u64)), Some(300.into()));
        let mut long = encode(&300u64);
        long.push(0);
        assert_eq!(decode_with_codec(&id, &long), None);
        assert_eq!(decode(Primitive::I64, &encode(&-5i64)), Some((-5).into()));
        assert_eq!(decode(Primitive::Bool, &[2]), None);
        assert_eq!(decode(Primitive::F64, &encode(&1.5f64)), Some(1.5.into()));
        assert_eq!(
            decode(Primitive::F64, &encode(&f64::NAN)),
            Some(Value::String("NaN".into()))
        );
        assert_eq!(
            decode(Primitive::String, &encode(&"héllo".to_string())),
            Some("héllo".into())
        );
        assert_eq!(decode(Primitive::String, &[3, b'a']), None);
    }

    #[test]
    fn tuples_decode_field_by_field() {
        let codec = SerdeCodec::<(u32, u64)>::new();
        let bytes = codec.to_bytes(&(3, 780)).unwrap();
        assert_eq!(
            decode_with_codec(codec.id(), &bytes),
            Some(serde_json::json!([3, 780]))
        );
        assert_eq!(
            decode_with_codec(codec.id(), &bytes[..bytes.len() - 1]),
            None
        );
        let codec = SerdeCodec::<(String, bool)>::new();
        let bytes = codec.to_bytes(&("a,b".to_string(), true)).unwrap();
        assert_eq!(
            decode_with_codec(codec.id(), &bytes),
            Some(serde_json::json!(["a,b", true]))
        );
    }

    #[test]
    fn keys_are_strings_only_when_they_read_as_one() {
        let key = encode(&"user-7".to_string());
        assert_eq!(decode_key(KeyType::Auto, &key), Some("user-7".into()));
        assert_eq!(decode_key(KeyType::Hex, &key), None);
        assert_eq!(decode_key(KeyType::Auto, &encode(&7u64)), None);
        assert_eq!(
            decode_key(KeyType::Typed(Primitive::U64), &encode(&7u64)),
            Some(7.into())
        );
        let names: Vec<String> = KeyType::value_variants()
            .iter()
            .filter_map(|k| Some(k.to_possible_value()?.get_name().to_string()))
            .collect();
        assert_eq!(names[..4], ["auto", "hex", "string", "bool"]);
        assert_eq!(
            KeyType::from_str("u64", true),
            Ok(KeyType::Typed(Primitive::U64))
        );
        assert_eq!(hex(&key), "06757365722d37");
    }
}
