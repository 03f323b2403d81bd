// SPDX-License-Identifier: Apache-2.0

//! Loads agent requests from JSON in the form that Kata's `agent-ctl` and its
//! policy test data use.
//!
//! That form is the serde encoding of the generated Rust structs, and it
//! differs from the canonical protobuf JSON mapping in four ways. A field
//! whose proto name is a Rust keyword carries the generated identifier
//! (`type_`). An unset message is `null`. Enums are numbers and `bytes` are
//! arrays of numbers. A oneof is an object under the oneof's name, such as
//! `"ErrnoRet": {"Errnoret": 1}`.
//!
//! The loader walks the message descriptor, so it accepts exactly the fields
//! the `.proto` files declare, under their proto name, JSON name or Rust
//! identifier. It rejects any other key and names its path. Enum names,
//! 64-bit integers as strings and oneof members as plain fields, as the
//! canonical mapping writes them, are accepted too.

use protobuf::reflect::{
    EnumDescriptor, FieldDescriptor, MessageDescriptor, OneofDescriptor, ReflectValueBox,
    RuntimeFieldType, RuntimeType,
};
use protobuf::{MessageDyn, MessageFull};
use serde_json::{Map, Value};

/// Maximum length of the excerpt of a rejected JSON value in an error.
const MAX_SHOWN_VALUE: usize = 60;

/// Failure to load a JSON document into a protobuf message. `path` is the
/// dotted field path from the top-level message, such as
/// `OCI.Linux.Namespaces[0].Type`.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("invalid JSON: {0}")]
    Syntax(#[source] serde_json::Error),

    #[error("unknown field {field:?} in message {message} at {path}")]
    UnknownField {
        path: String,
        message: String,
        field: String,
    },

    #[error("field {field:?} of message {message} at {path} is given more than once")]
    DuplicateField {
        path: String,
        message: String,
        field: String,
    },

    #[error("invalid value at {path}: expected {expected}, found {found}")]
    InvalidValue {
        path: String,
        expected: String,
        found: String,
    },
}

/// Parses `json` into a message of type `M`, rejecting unknown fields.
pub fn parse_request<M: MessageFull>(json: &str) -> Result<M, JsonError> {
    let mut message = M::new();
    merge_json(json, &M::descriptor(), &mut message)?;
    Ok(message)
}

/// Parses `json` into a new message of the type `descriptor` describes,
/// for callers that pick the type at run time (for example from a name).
pub fn parse_message(
    json: &str,
    descriptor: &MessageDescriptor,
) -> Result<Box<dyn MessageDyn>, JsonError> {
    let mut message = descriptor.new_instance();
    merge_json(json, descriptor, message.as_mut())?;
    Ok(message)
}

fn merge_json(
    json: &str,
    descriptor: &MessageDescriptor,
    message: &mut dyn MessageDyn,
) -> Result<(), JsonError> {
    let value: Value = serde_json::from_str(json).map_err(JsonError::Syntax)?;

    let object = expect_object(&value, "")?;
    merge_object(object, descriptor, message, "")
}

fn merge_object(
    object: &Map<String, Value>,
    descriptor: &MessageDescriptor,
    message: &mut dyn MessageDyn,
    path: &str,
) -> Result<(), JsonError> {
    let mut seen: Vec<i32> = Vec::new();

    for (key, value) in object {
        let child_path = join_path(path, key);

        if let Some(field) = find_field(descriptor, key) {
            mark_seen(&mut seen, field.number(), descriptor, key, path)?;
            merge_field(&field, value, message, &child_path)?;
            continue;
        }

        if let Some(oneof) = find_oneof(descriptor, key) {
            merge_oneof(&oneof, value, descriptor, message, &mut seen, &child_path)?;
            continue;
        }

        return Err(JsonError::UnknownField {
            path: display_path(path),
            message: descriptor.full_name().to_string(),
            field: key.clone(),
        });
    }

    Ok(())
}

fn mark_seen(
    seen: &mut Vec<i32>,
    number: i32,
    descriptor: &MessageDescriptor,
    key: &str,
    path: &str,
) -> Result<(), JsonError> {
    if seen.contains(&number) {
        return Err(JsonError::DuplicateField {
            path: display_path(path),
            message: descriptor.full_name().to_string(),
            field: key.to_string(),
        });
    }

    seen.push(number);
    Ok(())
}

/// Finds the field that `key` names: its proto name, its JSON name, or the
/// identifier protobuf-codegen gives it in Rust.
fn find_field(descriptor: &MessageDescriptor, key: &str) -> Option<FieldDescriptor> {
    descriptor.fields().find(|field| {
        field.name() == key || field.json_name() == key || rust_identifier(field.name()) == key
    })
}

/// Finds a real (not proto3 `optional`) oneof by its name, the key under
/// which serde writes the generated oneof enum.
fn find_oneof(descriptor: &MessageDescriptor, key: &str) -> Option<OneofDescriptor> {
    descriptor
        .oneofs()
        .find(|oneof| !oneof.is_synthetic() && rust_identifier(oneof.name()) == key)
}

/// Merges the serde form of a oneof: `null`, or an object with one key that
/// names the set member by its proto name or its generated variant name.
fn merge_oneof(
    oneof: &OneofDescriptor,
    value: &Value,
    descriptor: &MessageDescriptor,
    message: &mut dyn MessageDyn,
    seen: &mut Vec<i32>,
    path: &str,
) -> Result<(), JsonError> {
    if value.is_null() {
        return Ok(());
    }

    let object = expect_object(value, path)?;
    if object.len() != 1 {
        return Err(invalid(
            path,
            "an object with exactly one member of the oneof",
            value,
        ));
    }

    let (variant, member_value) = object.iter().next().expect("length checked above");
    let member = oneof
        .fields()
        .find(|field| field.name() == variant || variant_name(field.name()) == *variant)
        .ok_or_else(|| JsonError::UnknownField {
            path: display_path(path),
            message: descriptor.full_name().to_string(),
            field: variant.clone(),
        })?;

    mark_seen(seen, member.number(), descriptor, variant, path)?;
    merge_field(&member, member_value, message, &join_path(path, variant))
}

fn merge_field(
    field: &FieldDescriptor,
    value: &Value,
    message: &mut dyn MessageDyn,
    path: &str,
) -> Result<(), JsonError> {
    // In both JSON forms `null` stands for the field's default value.
    if value.is_null() {
        return Ok(());
    }

    match field.runtime_field_type() {
        RuntimeFieldType::Singular(kind) => {
            let converted = convert_value(&kind, value, path)?;
            field.set_singular_field(message, converted);
        }
        RuntimeFieldType::Repeated(kind) => {
            let items = value
                .as_array()
                .ok_or_else(|| invalid(path, "an array", value))?;
            for (index, item) in items.iter().enumerate() {
                let converted = convert_value(&kind, item, &format!("{path}[{index}]"))?;
                field.mut_repeated(message).push(converted);
            }
        }
        RuntimeFieldType::Map(key_kind, value_kind) => {
            let entries = expect_object(value, path)?;
            for (key, entry) in entries {
                let entry_path = format!("{path}[{key:?}]");
                let converted_key = convert_map_key(&key_kind, key, &entry_path)?;
                let converted_value = convert_value(&value_kind, entry, &entry_path)?;
                field
                    .mut_map(message)
                    .insert(converted_key, converted_value);
            }
        }
    }

    Ok(())
}

fn convert_value(
    kind: &RuntimeType,
    value: &Value,
    path: &str,
) -> Result<ReflectValueBox, JsonError> {
    let converted = match kind {
        RuntimeType::I32 => ReflectValueBox::I32(integer(value, path)?),
        RuntimeType::I64 => ReflectValueBox::I64(integer(value, path)?),
        RuntimeType::U32 => ReflectValueBox::U32(integer(value, path)?),
        RuntimeType::U64 => ReflectValueBox::U64(integer(value, path)?),
        RuntimeType::F32 => ReflectValueBox::F32(float(value, path)? as f32),
        RuntimeType::F64 => ReflectValueBox::F64(float(value, path)?),
        RuntimeType::Bool => ReflectValueBox::Bool(
            value
                .as_bool()
                .ok_or_else(|| invalid(path, "a boolean", value))?,
        ),
        RuntimeType::String => ReflectValueBox::String(
            value
                .as_str()
                .ok_or_else(|| invalid(path, "a string", value))?
                .to_string(),
        ),
        RuntimeType::VecU8 => ReflectValueBox::Bytes(bytes(value, path)?),
        RuntimeType::Enum(descriptor) => {
            ReflectValueBox::Enum(descriptor.clone(), enum_number(descriptor, value, path)?)
        }
        RuntimeType::Message(descriptor) => {
            let object = expect_object(value, path)?;
            let mut nested = descriptor.new_instance();
            merge_object(object, descriptor, nested.as_mut(), path)?;
            ReflectValueBox::Message(nested)
        }
    };

    Ok(converted)
}

fn convert_map_key(
    kind: &RuntimeType,
    key: &str,
    path: &str,
) -> Result<ReflectValueBox, JsonError> {
    // JSON object keys are always strings, so numeric and boolean map keys
    // arrive as their decimal or `true`/`false` text.
    let text = Value::String(key.to_string());
    match kind {
        RuntimeType::String => Ok(ReflectValueBox::String(key.to_string())),
        RuntimeType::Bool => match key {
            "true" => Ok(ReflectValueBox::Bool(true)),
            "false" => Ok(ReflectValueBox::Bool(false)),
            _ => Err(invalid(path, "a boolean map key", &text)),
        },
        RuntimeType::I32 | RuntimeType::I64 | RuntimeType::U32 | RuntimeType::U64 => {
            convert_value(kind, &text, path)
        }
        _ => Err(invalid(path, "a map key of a scalar type", &text)),
    }
}

/// Reads an integer given as a JSON number or, as the protobuf JSON mapping
/// writes 64-bit values, as a decimal string.
fn integer<T>(value: &Value, path: &str) -> Result<T, JsonError>
where
    T: TryFrom<i64> + TryFrom<u64> + std::str::FromStr,
{
    let expected = format!("an integer in the range of {}", std::any::type_name::<T>());

    let parsed = match value {
        Value::Number(number) => {
            if let Some(unsigned) = number.as_u64() {
                T::try_from(unsigned).ok()
            } else if let Some(signed) = number.as_i64() {
                T::try_from(signed).ok()
            } else {
                None
            }
        }
        Value::String(text) => text.parse::<T>().ok(),
        _ => None,
    };

    parsed.ok_or_else(|| invalid(path, &expected, value))
}

fn float(value: &Value, path: &str) -> Result<f64, JsonError> {
    let parsed = match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.parse::<f64>().ok(),
        _ => None,
    };

    parsed.ok_or_else(|| invalid(path, "a number", value))
}

// NOTE: only the serde form of `bytes` (an array of numbers) is read, not
// the base64 string of the canonical protobuf JSON mapping.
fn bytes(value: &Value, path: &str) -> Result<Vec<u8>, JsonError> {
    let items = value
        .as_array()
        .ok_or_else(|| invalid(path, "bytes as an array of numbers from 0 to 255", value))?;

    items
        .iter()
        .enumerate()
        .map(|(index, item)| integer::<u8>(item, &format!("{path}[{index}]")))
        .collect()
}

/// Reads an enum as its number (serde form) or its value name (protobuf
/// JSON). Proto3 enums are open, so an undeclared number is kept as is.
fn enum_number(descriptor: &EnumDescriptor, value: &Value, path: &str) -> Result<i32, JsonError> {
    if let Value::String(name) = value {
        let found = descriptor.value_by_name(name);
        let expected = format!("a value name of enum {}", descriptor.full_name());
        return found
            .map(|known| known.value())
            .ok_or_else(|| invalid(path, &expected, value));
    }

    integer::<i32>(value, path)
}

fn expect_object<'a>(value: &'a Value, path: &str) -> Result<&'a Map<String, Value>, JsonError> {
    value
        .as_object()
        .ok_or_else(|| invalid(path, "an object", value))
}

fn invalid(path: &str, expected: &str, found: &Value) -> JsonError {
    let mut shown = found.to_string();
    if shown.len() > MAX_SHOWN_VALUE {
        let mut end = MAX_SHOWN_VALUE;
        while !shown.is_char_boundary(end) {
            end -= 1;
        }
        shown.truncate(end);
        shown.push_str("...");
    }

    JsonError::InvalidValue {
        path: display_path(path),
        expected: expected.to_string(),
        found: shown,
    }
}

fn join_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn display_path(path: &str) -> String {
    if path.is_empty() {
        "the top level".to_string()
    } else {
        path.to_string()
    }
}

/// Returns the identifier protobuf-codegen 3.7 uses for a proto name: the
/// name itself, with `_` appended when it is a Rust keyword.
fn rust_identifier(name: &str) -> String {
    if RUST_KEYWORDS.contains(&name) {
        format!("{name}_")
    } else {
        name.to_string()
    }
}

/// Returns the enum variant name protobuf-codegen gives a oneof member:
/// the proto name in CamelCase (`errnoret` becomes `Errnoret`).
fn variant_name(name: &str) -> String {
    name.split('_')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect::<String>(),
                None => String::new(),
            }
        })
        .collect()
}

/// Words protobuf-codegen 3.7 escapes with a trailing `_`.
const RUST_KEYWORDS: &[&str] = &[
    "_", "abstract", "alignof", "as", "async", "await", "become", "box", "break", "const",
    "continue", "crate", "do", "dyn", "else", "enum", "extern", "false", "final", "fn", "for",
    "if", "impl", "in", "let", "loop", "macro", "match", "mod", "move", "mut", "offsetof",
    "override", "priv", "proc", "pub", "pure", "ref", "return", "Self", "self", "sizeof", "static",
    "struct", "super", "trait", "true", "type", "typeof", "unsafe", "unsized", "use", "virtual",
    "where", "while", "yield",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{CreateContainerRequest, CreateSandboxRequest, WriteStreamRequest};
    use crate::health::{health_check_response::ServingStatus, HealthCheckResponse};
    use crate::oci::{linux_syscall::ErrnoRet, LinuxSyscall, Mount};
    use crate::types::{IPFamily, Route};

    #[test]
    fn parse_accepts_rust_identifier_and_proto_name() {
        let by_identifier: Mount =
            parse_request(r#"{"type_": "proc", "destination": "/proc"}"#).unwrap();
        let by_proto_name: Mount = parse_request(r#"{"type": "proc"}"#).unwrap();

        assert_eq!(by_identifier.type_, "proc");
        assert_eq!(by_identifier.destination, "/proc");
        assert_eq!(by_proto_name.type_, "proc");
    }

    #[test]
    fn parse_rejects_unknown_field_with_path() {
        let error =
            parse_request::<CreateContainerRequest>(r#"{"OCI": {"Linux": {"Namespacez": []}}}"#)
                .unwrap_err();

        let JsonError::UnknownField {
            path,
            message,
            field,
        } = &error
        else {
            panic!("expected UnknownField, got {error:?}");
        };
        assert_eq!(path, "OCI.Linux");
        assert_eq!(message, "grpc.Linux");
        assert_eq!(field, "Namespacez");
    }

    #[test]
    fn parse_treats_null_message_as_unset() {
        let request: CreateContainerRequest =
            parse_request(r#"{"string_user": null, "OCI": null}"#).unwrap();

        assert!(request.string_user.is_none());
        assert!(request.OCI.is_none());
    }

    #[test]
    fn parse_reads_enum_by_number_and_name() {
        let by_number: HealthCheckResponse = parse_request(r#"{"status": 1}"#).unwrap();
        let by_name: Route = parse_request(r#"{"family": "v6"}"#).unwrap();

        assert_eq!(by_number.status.enum_value(), Ok(ServingStatus::SERVING));
        assert_eq!(by_name.family.enum_value(), Ok(IPFamily::v6));
    }

    #[test]
    fn parse_rejects_unknown_enum_name() {
        let error = parse_request::<Route>(r#"{"family": "v5"}"#).unwrap_err();

        assert!(
            matches!(error, JsonError::InvalidValue { ref path, .. } if path == "family"),
            "{error}"
        );
    }

    #[test]
    fn parse_reads_oneof_in_serde_and_proto_form() {
        let serde_form: LinuxSyscall =
            parse_request(r#"{"Names": ["open"], "ErrnoRet": {"Errnoret": 13}}"#).unwrap();
        let proto_form: LinuxSyscall = parse_request(r#"{"errnoret": 13}"#).unwrap();
        let unset: LinuxSyscall = parse_request(r#"{"ErrnoRet": null}"#).unwrap();

        assert_eq!(serde_form.ErrnoRet, Some(ErrnoRet::Errnoret(13)));
        assert_eq!(serde_form.Names, vec!["open".to_string()]);
        assert_eq!(proto_form.ErrnoRet, Some(ErrnoRet::Errnoret(13)));
        assert_eq!(unset.ErrnoRet, None);
    }

    #[test]
    fn parse_rejects_oneof_given_twice() {
        let error =
            parse_request::<LinuxSyscall>(r#"{"errnoret": 1, "ErrnoRet": {"Errnoret": 2}}"#)
                .unwrap_err();

        assert!(matches!(error, JsonError::DuplicateField { .. }), "{error}");
    }

    #[test]
    fn parse_reads_bytes_as_number_array() {
        let request: WriteStreamRequest = parse_request(r#"{"data": [104, 105]}"#).unwrap();

        assert_eq!(request.data, b"hi".to_vec());
    }

    #[test]
    fn parse_rejects_byte_out_of_range() {
        let error = parse_request::<WriteStreamRequest>(r#"{"data": [104, 256]}"#).unwrap_err();

        assert!(
            matches!(error, JsonError::InvalidValue { ref path, .. } if path == "data[1]"),
            "{error}"
        );
    }

    #[test]
    fn parse_reads_64_bit_integer_from_string() {
        let request: crate::oci::LinuxMemory =
            parse_request(r#"{"Limit": "-1", "Swappiness": 60}"#).unwrap();

        assert_eq!(request.Limit, -1);
        assert_eq!(request.Swappiness, 60);
    }

    #[test]
    fn parse_rejects_negative_unsigned() {
        let error = parse_request::<CreateContainerRequest>(r#"{"stdin_port": -1}"#).unwrap_err();

        assert!(
            matches!(error, JsonError::InvalidValue { ref path, .. } if path == "stdin_port"),
            "{error}"
        );
    }

    #[test]
    fn parse_reads_map_and_repeated() {
        let json = r#"{"OCI": {"Annotations": {"a": "1"}, "Linux": {"Sysctl": {"net.ipv4.ip_forward": "1"}}}}"#;
        let request: CreateContainerRequest = parse_request(json).unwrap();

        let spec = request.OCI.unwrap();
        assert_eq!(spec.Annotations.get("a").map(String::as_str), Some("1"));
        assert_eq!(
            spec.Linux
                .Sysctl
                .get("net.ipv4.ip_forward")
                .map(String::as_str),
            Some("1")
        );
    }

    #[test]
    fn parse_rejects_wrong_type_with_path() {
        let error =
            parse_request::<CreateSandboxRequest>(r#"{"dns": ["1.1.1.1", 8]}"#).unwrap_err();

        let JsonError::InvalidValue {
            path,
            expected,
            found,
        } = &error
        else {
            panic!("expected InvalidValue, got {error:?}");
        };
        assert_eq!(path, "dns[1]");
        assert_eq!(expected, "a string");
        assert_eq!(found, "8");
    }

    #[test]
    fn parse_rejects_duplicate_field_under_two_names() {
        let error = parse_request::<Mount>(r#"{"type": "proc", "type_": "sysfs"}"#).unwrap_err();

        assert!(matches!(error, JsonError::DuplicateField { .. }), "{error}");
    }

    #[test]
    fn parse_rejects_non_object_document() {
        let error = parse_request::<Mount>("[]").unwrap_err();

        assert!(
            matches!(error, JsonError::InvalidValue { ref path, .. } if path == "the top level"),
            "{error}"
        );
    }

    #[test]
    fn parse_message_by_descriptor() {
        let descriptor = crate::agent::file_descriptor()
            .message_by_package_relative_name("CreateSandboxRequest")
            .unwrap();

        let message = parse_message(r#"{"hostname": "pod"}"#, &descriptor).unwrap();

        let request = message.downcast_ref::<CreateSandboxRequest>().unwrap();
        assert_eq!(request.hostname, "pod");
    }

    #[test]
    fn parse_rejects_malformed_json() {
        let error = parse_request::<Mount>("{").unwrap_err();

        assert!(matches!(error, JsonError::Syntax(_)), "{error}");
    }
}
