//! The wire format of an inference request and response, with the binary tensor data
//! extension.
//!
//! A request is a JSON header, optionally followed by raw tensor bytes: when the
//! `Inference-Header-Content-Length` header is present it gives the JSON's length, and each
//! input carried in binary says how many of the following bytes are its own in
//! `parameters.binary_data_size` (in input order). Fixed-size elements are little-endian;
//! a BYTES element is a 4-byte little-endian length and that many bytes. Binary inputs are
//! borrowed from the body, never copied: [`Values::get`] reads element `k` in place.
//!
//! JSON `data` may be flat or nested (row-major either way). A response is plain JSON
//! unless an output is asked for in binary (`parameters.binary_data` on the output, or
//! `binary_data_output` on the request as the default for all), then it is the JSON header
//! followed by those outputs' bytes, and [`Encoded::header_len`] is the length to send in
//! `Inference-Header-Content-Length`.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::OipError;

/// A tensor element type of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    Bool,
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    F16,
    Bf16,
    F32,
    F64,
    Bytes,
}

impl DataType {
    pub fn parse(name: &str) -> Option<DataType> {
        Some(match name {
            "BOOL" => DataType::Bool,
            "UINT8" => DataType::U8,
            "UINT16" => DataType::U16,
            "UINT32" => DataType::U32,
            "UINT64" => DataType::U64,
            "INT8" => DataType::I8,
            "INT16" => DataType::I16,
            "INT32" => DataType::I32,
            "INT64" => DataType::I64,
            "FP16" => DataType::F16,
            "BF16" => DataType::Bf16,
            "FP32" => DataType::F32,
            "FP64" => DataType::F64,
            "BYTES" => DataType::Bytes,
            _ => return None,
        })
    }

    pub const fn name(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::U8 => "UINT8",
            DataType::U16 => "UINT16",
            DataType::U32 => "UINT32",
            DataType::U64 => "UINT64",
            DataType::I8 => "INT8",
            DataType::I16 => "INT16",
            DataType::I32 => "INT32",
            DataType::I64 => "INT64",
            DataType::F16 => "FP16",
            DataType::Bf16 => "BF16",
            DataType::F32 => "FP32",
            DataType::F64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    /// Bytes per element; `None` for BYTES (each element is length-prefixed).
    pub const fn size(self) -> Option<usize> {
        match self {
            DataType::Bool | DataType::U8 | DataType::I8 => Some(1),
            DataType::U16 | DataType::I16 | DataType::F16 | DataType::Bf16 => Some(2),
            DataType::U32 | DataType::I32 | DataType::F32 => Some(4),
            DataType::U64 | DataType::I64 | DataType::F64 => Some(8),
            DataType::Bytes => None,
        }
    }

    fn is_integer(self) -> bool {
        matches!(
            self,
            DataType::U8
                | DataType::U16
                | DataType::U32
                | DataType::U64
                | DataType::I8
                | DataType::I16
                | DataType::I32
                | DataType::I64
        )
    }

    /// Element `k` of little-endian `bytes` (of this fixed-size type) as a number.
    #[inline]
    fn read(self, bytes: &[u8], k: usize) -> f64 {
        fn at<const N: usize>(bytes: &[u8], k: usize) -> [u8; N] {
            bytes[k * N..(k + 1) * N].try_into().expect("N bytes")
        }
        match self {
            DataType::Bool => f64::from(u8::from(bytes[k] != 0)),
            DataType::U8 => f64::from(bytes[k]),
            DataType::I8 => f64::from(bytes[k] as i8),
            DataType::U16 => f64::from(u16::from_le_bytes(at(bytes, k))),
            DataType::I16 => f64::from(i16::from_le_bytes(at(bytes, k))),
            DataType::U32 => f64::from(u32::from_le_bytes(at(bytes, k))),
            DataType::I32 => f64::from(i32::from_le_bytes(at(bytes, k))),
            DataType::U64 => u64::from_le_bytes(at(bytes, k)) as f64,
            DataType::I64 => i64::from_le_bytes(at(bytes, k)) as f64,
            DataType::F16 => f64::from(f16_to_f32(u16::from_le_bytes(at(bytes, k)))),
            DataType::Bf16 => {
                f64::from(f32::from_bits(u32::from(u16::from_le_bytes(at(bytes, k))) << 16))
            }
            DataType::F32 => f64::from(f32::from_le_bytes(at(bytes, k))),
            DataType::F64 => f64::from_le_bytes(at(bytes, k)),
            DataType::Bytes => f64::NAN,
        }
    }
}

/// IEEE 754 half precision to single (exact: every half is a single).
fn f16_to_f32(bits: u16) -> f32 {
    let exponent = u32::from((bits >> 10) & 0x1f);
    let mantissa = u32::from(bits & 0x3ff);
    let magnitude = match exponent {
        // Zero and subnormals: mantissa × 2^-24.
        0 => mantissa as f32 * f32::powi(2.0, -24),
        0x1f => f32::from_bits(0x7f80_0000 | (mantissa << 13)),
        e => f32::from_bits(((e + 127 - 15) << 23) | (mantissa << 13)),
    };
    if bits & 0x8000 != 0 { -magnitude } else { magnitude }
}

/// One element of a tensor, as the encoder reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Element<'a> {
    Number(f64),
    Bool(bool),
    Text(&'a str),
    /// A BYTES element that is not UTF-8.
    NotText,
}

/// A tensor's elements, flat and row-major.
#[derive(Debug)]
pub enum Values<'a> {
    /// JSON numbers (FP32 ones already rounded to single precision).
    Numbers(Vec<f64>),
    Bools(Vec<bool>),
    Texts(Vec<String>),
    /// Binary fixed-size elements, borrowed from the body.
    Binary {
        datatype: DataType,
        bytes: &'a [u8],
    },
    /// Binary BYTES elements, borrowed from the body.
    BinaryBytes(Vec<&'a [u8]>),
}

impl Values<'_> {
    pub fn len(&self) -> usize {
        match self {
            Values::Numbers(v) => v.len(),
            Values::Bools(v) => v.len(),
            Values::Texts(v) => v.len(),
            Values::Binary { datatype, bytes } => bytes.len() / datatype.size().unwrap_or(1),
            Values::BinaryBytes(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `k` (`k < len()`).
    #[inline]
    pub fn get(&self, k: usize) -> Element<'_> {
        match self {
            Values::Numbers(v) => Element::Number(v[k]),
            Values::Bools(v) => Element::Bool(v[k]),
            Values::Texts(v) => Element::Text(&v[k]),
            Values::Binary { datatype: DataType::Bool, bytes } => Element::Bool(bytes[k] != 0),
            Values::Binary { datatype, bytes } => Element::Number(datatype.read(bytes, k)),
            Values::BinaryBytes(v) => match std::str::from_utf8(v[k]) {
                Ok(text) => Element::Text(text),
                Err(_) => Element::NotText,
            },
        }
    }
}

/// One input tensor of a request.
#[derive(Debug)]
pub struct Tensor<'a> {
    pub name: String,
    pub shape: Vec<usize>,
    pub datatype: DataType,
    pub values: Values<'a>,
}

impl Tensor<'_> {
    /// `[2, 4]`, for messages.
    pub fn shape_text(&self) -> String {
        format!("{:?}", self.shape)
    }
}

/// An output a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRequest {
    pub name: String,
    /// `parameters.binary_data`, when given.
    pub binary: Option<bool>,
    /// `parameters.classification`: the top-k classes as `score:index:label` (0: not asked).
    pub classification: usize,
}

/// A parsed inference request.
#[derive(Debug)]
pub struct Request<'a> {
    pub id: Option<String>,
    pub inputs: Vec<Tensor<'a>>,
    /// The outputs asked for; `None`: all of them.
    pub outputs: Option<Vec<OutputRequest>>,
    /// `parameters.binary_data_output`: outputs in binary unless an output says otherwise.
    pub binary_output: bool,
    /// The batch size every input agrees on (its first dimension).
    pub rows: usize,
}

impl Request<'_> {
    /// Whether output `name` is answered in binary.
    pub fn binary(&self, output: Option<&OutputRequest>) -> bool {
        output.and_then(|o| o.binary).unwrap_or(self.binary_output)
    }
}

#[derive(Deserialize)]
struct WireRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    inputs: Vec<WireInput>,
    #[serde(default)]
    outputs: Option<Vec<WireOutput>>,
}

#[derive(Deserialize)]
struct WireInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(default)]
    data: Option<JsonData>,
}

#[derive(Deserialize)]
struct WireOutput {
    name: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

/// JSON tensor data, flattened while it is parsed (no intermediate `Value` tree).
#[derive(Debug, PartialEq)]
enum JsonData {
    Numbers(Vec<f64>),
    Bools(Vec<bool>),
    Texts(Vec<String>),
}

impl<'de> Deserialize<'de> for JsonData {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut data = None;
        deserializer.deserialize_any(Flatten(&mut data))?;
        Ok(data.unwrap_or(JsonData::Numbers(Vec::new())))
    }
}

struct Flatten<'d>(&'d mut Option<JsonData>);

impl Flatten<'_> {
    fn push<E: de::Error>(self, element: JsonElement) -> Result<(), E> {
        match (self.0.get_or_insert_with(|| element.empty()), element) {
            (JsonData::Numbers(v), JsonElement::Number(x)) => v.push(x),
            (JsonData::Bools(v), JsonElement::Bool(b)) => v.push(b),
            (JsonData::Texts(v), JsonElement::Text(s)) => v.push(s),
            _ => return Err(E::custom("`data` mixes numbers, strings and booleans")),
        }
        Ok(())
    }
}

enum JsonElement {
    Number(f64),
    Bool(bool),
    Text(String),
}

impl JsonElement {
    fn empty(&self) -> JsonData {
        match self {
            JsonElement::Number(_) => JsonData::Numbers(Vec::new()),
            JsonElement::Bool(_) => JsonData::Bools(Vec::new()),
            JsonElement::Text(_) => JsonData::Texts(Vec::new()),
        }
    }
}

impl<'de> Visitor<'de> for Flatten<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array (flat or nested) of numbers, strings or booleans")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Flatten(&mut *self.0))?.is_some() {}
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, x: f64) -> Result<(), E> {
        self.push(JsonElement::Number(x))
    }

    fn visit_i64<E: de::Error>(self, x: i64) -> Result<(), E> {
        self.push(JsonElement::Number(x as f64))
    }

    fn visit_u64<E: de::Error>(self, x: u64) -> Result<(), E> {
        self.push(JsonElement::Number(x as f64))
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<(), E> {
        self.push(JsonElement::Bool(b))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        self.push(JsonElement::Text(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<(), E> {
        self.push(JsonElement::Text(s))
    }
}

impl<'de> DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// Parameters the protocol defines that Kiln does not implement: refused by name rather
/// than ignored, so a client never believes it got what it asked for.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("shared_memory_region", "shared memory is not supported; send the data in the request"),
    ("sequence_id", "sequences are not supported: Kiln's models are stateless"),
];

fn refuse_unsupported(parameters: Option<&Map<String, Value>>, what: &str) -> Result<(), OipError> {
    for (name, why) in UNSUPPORTED {
        if parameters.is_some_and(|p| p.contains_key(*name)) {
            return Err(OipError::bad_request(format!("{what}: `{name}`: {why}")));
        }
    }
    Ok(())
}

fn bool_parameter(
    parameters: Option<&Map<String, Value>>,
    name: &str,
    what: &str,
) -> Result<Option<bool>, OipError> {
    match parameters.and_then(|p| p.get(name)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => {
            Err(OipError::bad_request(format!("{what}: `{name}` must be a boolean, got {other}")))
        }
    }
}

fn size_parameter(
    parameters: Option<&Map<String, Value>>,
    name: &str,
    what: &str,
) -> Result<Option<usize>, OipError> {
    match parameters.and_then(|p| p.get(name)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some() => {
            usize::try_from(n.as_u64().unwrap_or_default())
                .map(Some)
                .map_err(|_| OipError::bad_request(format!("{what}: `{name}` is too large")))
        }
        Some(other) => Err(OipError::bad_request(format!(
            "{what}: `{name}` must be a non-negative integer, got {other}"
        ))),
    }
}

/// Parses a request body: all JSON, or (`header_len` given) a JSON header of that many bytes
/// followed by the binary inputs.
pub fn parse_request(body: &[u8], header_len: Option<usize>) -> Result<Request<'_>, OipError> {
    let (json, mut binary) = match header_len {
        Some(n) if n > body.len() => {
            return Err(OipError::bad_request(format!(
                "Inference-Header-Content-Length is {n} but the body has only {} bytes",
                body.len()
            )));
        }
        Some(n) => body.split_at(n),
        None => (body, &body[body.len()..]),
    };
    let wire: WireRequest = serde_json::from_slice(json).map_err(|e| {
        let hint = if header_len.is_none() && e.classify() == serde_json::error::Category::Syntax {
            " (binary tensor data needs the Inference-Header-Content-Length header)"
        } else {
            ""
        };
        OipError::bad_request(format!("malformed inference request: {e}{hint}"))
    })?;
    refuse_unsupported(wire.parameters.as_ref(), "request parameter")?;
    let binary_output =
        bool_parameter(wire.parameters.as_ref(), "binary_data_output", "request parameter")?
            .unwrap_or(false);
    if wire.inputs.is_empty() {
        return Err(OipError::bad_request("the request has no inputs"));
    }
    let mut inputs = Vec::with_capacity(wire.inputs.len());
    for input in wire.inputs {
        let what = format!("input `{}`", input.name);
        if inputs.iter().any(|t: &Tensor<'_>| t.name == input.name) {
            return Err(OipError::bad_request(format!("{what} is given twice")));
        }
        let datatype = DataType::parse(&input.datatype).ok_or_else(|| {
            OipError::bad_request(format!(
                "{what}: unknown datatype `{}` (the protocol's are BOOL, UINT8-64, INT8-64, FP16, BF16, FP32, FP64, BYTES)",
                input.datatype
            ))
        })?;
        let mut shape = Vec::with_capacity(input.shape.len());
        for &d in &input.shape {
            shape.push(usize::try_from(d).map_err(|_| {
                OipError::bad_request(format!(
                    "{what}: shape {:?} has a negative dimension",
                    input.shape
                ))
            })?);
        }
        let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or_else(|| {
            OipError::bad_request(format!("{what}: shape {:?} is too large", input.shape))
        })?;
        let parameters = input.parameters.as_ref();
        refuse_unsupported(parameters, &what)?;
        let binary_size = size_parameter(parameters, "binary_data_size", &what)?;
        let values = match (input.data, binary_size) {
            (Some(_), Some(_)) => {
                return Err(OipError::bad_request(format!(
                    "{what} has both `data` and `parameters.binary_data_size`"
                )));
            }
            (None, None) => {
                return Err(OipError::bad_request(format!(
                    "{what} has no data: give `data`, or binary data with `parameters.binary_data_size`"
                )));
            }
            (Some(data), None) => json_values(data, datatype, &what)?,
            (None, Some(size)) => {
                if header_len.is_none() {
                    return Err(OipError::bad_request(format!(
                        "{what} has `parameters.binary_data_size` but the request has no Inference-Header-Content-Length header"
                    )));
                }
                if size > binary.len() {
                    return Err(OipError::bad_request(format!(
                        "{what}: binary_data_size is {size} but only {} bytes of binary data are left",
                        binary.len()
                    )));
                }
                let (mine, rest) = binary.split_at(size);
                binary = rest;
                binary_values(mine, datatype, count, &what)?
            }
        };
        if values.len() != count {
            return Err(OipError::bad_request(format!(
                "{what} has {} elements but its shape {:?} holds {count}",
                values.len(),
                input.shape
            )));
        }
        inputs.push(Tensor { name: input.name, shape, datatype, values });
    }
    if !binary.is_empty() {
        return Err(OipError::bad_request(format!(
            "{} bytes of binary data follow the last binary input (check each input's binary_data_size)",
            binary.len()
        )));
    }
    let mut rows = None;
    for tensor in &inputs {
        let Some(&n) = tensor.shape.first() else {
            return Err(OipError::bad_request(format!(
                "input `{}` has shape []: the first dimension is the batch (rows)",
                tensor.name
            )));
        };
        match rows {
            None => rows = Some((n, &tensor.name)),
            Some((m, first)) if m != n => {
                return Err(OipError::bad_request(format!(
                    "inputs disagree on the batch size: `{first}` has {m} rows, `{}` has {n}",
                    tensor.name
                )));
            }
            Some(_) => {}
        }
    }
    let rows = rows.map_or(0, |(n, _)| n);
    let outputs = match wire.outputs {
        None => None,
        Some(list) => {
            let mut outputs: Vec<OutputRequest> = Vec::with_capacity(list.len());
            for output in list {
                let what = format!("output `{}`", output.name);
                let parameters = output.parameters.as_ref();
                refuse_unsupported(parameters, &what)?;
                if outputs.iter().any(|o| o.name == output.name) {
                    return Err(OipError::bad_request(format!("{what} is asked for twice")));
                }
                outputs.push(OutputRequest {
                    binary: bool_parameter(parameters, "binary_data", &what)?,
                    classification: size_parameter(parameters, "classification", &what)?
                        .unwrap_or(0),
                    name: output.name,
                });
            }
            Some(outputs)
        }
    };
    Ok(Request { id: wire.id, inputs, outputs, binary_output, rows })
}

fn json_values(
    data: JsonData,
    datatype: DataType,
    what: &str,
) -> Result<Values<'static>, OipError> {
    let wrong = |found: &str| {
        OipError::bad_request(format!(
            "{what}: datatype {} but `data` holds {found}",
            datatype.name()
        ))
    };
    match (data, datatype) {
        (JsonData::Texts(v), DataType::Bytes) => Ok(Values::Texts(v)),
        (JsonData::Texts(_), _) => Err(wrong("strings")),
        (JsonData::Bools(v), DataType::Bool) => Ok(Values::Bools(v)),
        (JsonData::Bools(_), _) => Err(wrong("booleans")),
        (JsonData::Numbers(v), DataType::Bytes) if !v.is_empty() => Err(wrong("numbers")),
        (JsonData::Numbers(v), DataType::Bool) if !v.is_empty() => Err(wrong("numbers")),
        (JsonData::Numbers(v), DataType::Bytes) => Ok(Values::Texts(Vec::with_capacity(v.len()))),
        (JsonData::Numbers(_), DataType::Bool) => Ok(Values::Bools(Vec::new())),
        (JsonData::Numbers(mut v), datatype) => {
            if datatype.is_integer()
                && let Some(x) = v.iter().find(|x| x.fract() != 0.0)
            {
                return Err(OipError::bad_request(format!(
                    "{what}: datatype {} but `data` holds {x}, not an integer",
                    datatype.name()
                )));
            }
            // The precision the client declared: JSON FP32 equals the same values in binary.
            match datatype {
                DataType::F32 => v.iter_mut().for_each(|x| *x = f64::from(*x as f32)),
                DataType::F16 | DataType::Bf16 => {
                    return Err(OipError::bad_request(format!(
                        "{what}: {} data must be sent as binary data",
                        datatype.name()
                    )));
                }
                _ => {}
            }
            Ok(Values::Numbers(v))
        }
    }
}

fn binary_values<'a>(
    bytes: &'a [u8],
    datatype: DataType,
    count: usize,
    what: &str,
) -> Result<Values<'a>, OipError> {
    match datatype.size() {
        Some(size) => {
            if bytes.len() != count * size {
                return Err(OipError::bad_request(format!(
                    "{what}: binary_data_size is {} bytes but its shape holds {count} {} elements of {size} bytes ({} bytes)",
                    bytes.len(),
                    datatype.name(),
                    count * size
                )));
            }
            Ok(Values::Binary { datatype, bytes })
        }
        None => {
            let mut elements = Vec::with_capacity(count.min(bytes.len() / 4));
            let mut rest = bytes;
            while !rest.is_empty() {
                let Some((len, tail)) = rest.split_first_chunk::<4>() else {
                    return Err(OipError::bad_request(format!(
                        "{what}: BYTES element {} is cut short: {} bytes left where a 4-byte length was expected",
                        elements.len(),
                        rest.len()
                    )));
                };
                let len = u32::from_le_bytes(*len) as usize;
                if len > tail.len() {
                    return Err(OipError::bad_request(format!(
                        "{what}: BYTES element {} says {len} bytes but only {} are left",
                        elements.len(),
                        tail.len()
                    )));
                }
                let (element, tail) = tail.split_at(len);
                elements.push(element);
                rest = tail;
            }
            Ok(Values::BinaryBytes(elements))
        }
    }
}

/// An output tensor's data.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bytes(Vec<String>),
}

impl OutputData {
    fn datatype(&self) -> DataType {
        match self {
            OutputData::F32(_) => DataType::F32,
            OutputData::F64(_) => DataType::F64,
            OutputData::Bytes(_) => DataType::Bytes,
        }
    }

    fn binary_len(&self) -> usize {
        match self {
            OutputData::F32(v) => v.len() * 4,
            OutputData::F64(v) => v.len() * 8,
            OutputData::Bytes(v) => v.iter().map(|s| 4 + s.len()).sum(),
        }
    }

    fn write_binary(&self, out: &mut Vec<u8>) {
        match self {
            OutputData::F32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            OutputData::F64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            OutputData::Bytes(v) => {
                for s in v {
                    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                    out.extend_from_slice(s.as_bytes());
                }
            }
        }
    }
}

impl Serialize for OutputData {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            OutputData::F32(v) => v.serialize(serializer),
            OutputData::F64(v) => v.serialize(serializer),
            OutputData::Bytes(v) => v.serialize(serializer),
        }
    }
}

/// One output of a response.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub name: &'static str,
    pub shape: Vec<usize>,
    pub data: OutputData,
    pub binary: bool,
}

#[derive(Serialize)]
struct WireResponse<'a> {
    model_name: &'a str,
    model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    outputs: Vec<WireOutputTensor<'a>>,
}

#[derive(Serialize)]
struct WireOutputTensor<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinarySize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a OutputData>,
}

#[derive(Serialize)]
struct BinarySize {
    binary_data_size: usize,
}

/// An encoded response body.
#[derive(Debug)]
pub struct Encoded {
    pub body: Vec<u8>,
    /// The JSON header's length, when binary outputs follow it.
    pub header_len: Option<usize>,
}

/// Writes a response: JSON, then the binary outputs' bytes in output order.
pub fn write_response(model: &str, version: i32, id: Option<&str>, outputs: &[Output]) -> Encoded {
    let wire = WireResponse {
        model_name: model,
        model_version: version.to_string(),
        id,
        outputs: outputs
            .iter()
            .map(|o| WireOutputTensor {
                name: o.name,
                datatype: o.data.datatype().name(),
                shape: &o.shape,
                parameters: o.binary.then(|| BinarySize { binary_data_size: o.data.binary_len() }),
                data: (!o.binary).then_some(&o.data),
            })
            .collect(),
    };
    let binary: usize = outputs.iter().filter(|o| o.binary).map(|o| o.data.binary_len()).sum();
    let mut body = Vec::with_capacity(256 + binary);
    serde_json::to_writer(&mut body, &wire).expect("a response serialises");
    if !outputs.iter().any(|o| o.binary) {
        return Encoded { body, header_len: None };
    }
    let header_len = body.len();
    for output in outputs.iter().filter(|o| o.binary) {
        output.data.write_binary(&mut body);
    }
    Encoded { body, header_len: Some(header_len) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary_body(header: &Value, tail: &[u8]) -> (Vec<u8>, usize) {
        let json = serde_json::to_vec(header).unwrap();
        let n = json.len();
        let mut body = json;
        body.extend_from_slice(tail);
        (body, n)
    }

    fn bytes_element(s: &[u8]) -> Vec<u8> {
        let mut v = (s.len() as u32).to_le_bytes().to_vec();
        v.extend_from_slice(s);
        v
    }

    #[test]
    fn binary_inputs_are_read_in_order_and_in_place() {
        let floats: Vec<u8> =
            [1.5f32, -2.0, 3.25, 4.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        let mut texts = bytes_element(b"red");
        texts.extend(bytes_element(b""));
        let ints: Vec<u8> = [7i64, -9].iter().flat_map(|x| x.to_le_bytes()).collect();
        let header = serde_json::json!({
            "id": "r1",
            "inputs": [
                {"name": "m", "shape": [2, 2], "datatype": "FP32", "parameters": {"binary_data_size": 16}},
                {"name": "c", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": texts.len()}},
                {"name": "j", "shape": [2, 1], "datatype": "FP64", "data": [[0.1], [0.2]]},
                {"name": "i", "shape": [2], "datatype": "INT64", "parameters": {"binary_data_size": 16}},
            ],
            "parameters": {"binary_data_output": true},
        });
        let mut tail = floats.clone();
        tail.extend(&texts);
        tail.extend(&ints);
        let (body, n) = binary_body(&header, &tail);
        let req = parse_request(&body, Some(n)).unwrap();
        assert_eq!(req.id.as_deref(), Some("r1"));
        assert_eq!(req.rows, 2);
        assert!(req.binary_output);
        let m = &req.inputs[0];
        assert_eq!(m.shape, [2, 2]);
        assert_eq!(
            (0..4).map(|k| m.values.get(k)).collect::<Vec<_>>(),
            [1.5, -2.0, 3.25, 4.0].map(Element::Number)
        );
        assert_eq!(req.inputs[1].values.get(0), Element::Text("red"));
        assert_eq!(req.inputs[1].values.get(1), Element::Text(""));
        assert_eq!(req.inputs[2].values.get(1), Element::Number(0.2));
        assert_eq!(req.inputs[3].values.get(1), Element::Number(-9.0));
        // Borrowed, not copied.
        let Values::Binary { bytes, .. } = &m.values else { panic!("binary") };
        assert_eq!(bytes.as_ptr(), body[n..].as_ptr());
    }

    #[test]
    fn every_numeric_datatype_reads_little_endian() {
        let cases: [(&str, Vec<u8>, f64); 12] = [
            ("BOOL", vec![1], 1.0),
            ("UINT8", vec![200], 200.0),
            ("INT8", vec![0xff], -1.0),
            ("UINT16", 500u16.to_le_bytes().to_vec(), 500.0),
            ("INT16", (-500i16).to_le_bytes().to_vec(), -500.0),
            ("UINT32", 70000u32.to_le_bytes().to_vec(), 70000.0),
            ("INT32", (-70000i32).to_le_bytes().to_vec(), -70000.0),
            ("UINT64", 1u64.to_le_bytes().to_vec(), 1.0),
            ("INT64", (-3i64).to_le_bytes().to_vec(), -3.0),
            ("FP16", 0x3e00u16.to_le_bytes().to_vec(), 1.5),
            ("BF16", 0xc040u16.to_le_bytes().to_vec(), -3.0),
            ("FP64", 0.1f64.to_le_bytes().to_vec(), 0.1),
        ];
        for (datatype, bytes, want) in cases {
            let header = serde_json::json!({"inputs": [{"name": "x", "shape": [1], "datatype": datatype,
                "parameters": {"binary_data_size": bytes.len()}}]});
            let (body, n) = binary_body(&header, &bytes);
            let req = parse_request(&body, Some(n)).unwrap();
            let got = match req.inputs[0].values.get(0) {
                Element::Number(x) => x,
                Element::Bool(b) => f64::from(u8::from(b)),
                other => panic!("{datatype}: {other:?}"),
            };
            assert_eq!(got, want, "{datatype}");
        }
        assert_eq!(f16_to_f32(0x0001), f32::powi(2.0, -24));
        assert_eq!(f16_to_f32(0x8001), -f32::powi(2.0, -24));
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0xc000), -2.0);
    }

    #[test]
    fn json_data_may_be_nested_and_fp32_is_rounded_to_single_precision() {
        let body = br#"{"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[0.1, 2], [3, 4]]}], "model_name": "ignored"}"#;
        let req = parse_request(body, None).unwrap();
        assert_eq!(req.inputs[0].values.get(0), Element::Number(f64::from(0.1f32)));
        assert_eq!(req.inputs[0].values.get(3), Element::Number(4.0));
        assert_eq!(req.outputs, None);
        assert!(!req.binary_output);
    }

    fn refused(body: &[u8], header_len: Option<usize>) -> String {
        let err = parse_request(body, header_len).unwrap_err();
        assert_eq!(err.status.as_u16(), 400, "{}", err.message);
        err.message
    }

    #[test]
    fn malformed_framing_and_tensors_are_refused_naming_the_problem() {
        // Not JSON.
        assert!(refused(b"nope", None).contains("malformed inference request"));
        // Binary data without the header.
        let (body, _) = binary_body(
            &serde_json::json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}]}),
            &1f32.to_le_bytes(),
        );
        assert!(refused(&body, None).contains("Inference-Header-Content-Length"));
        // A header longer than the body.
        assert!(refused(&body, Some(body.len() + 1)).contains("only"));
        // A size that does not match the shape.
        let header = serde_json::json!({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 4}}]});
        let (body, n) = binary_body(&header, &1f32.to_le_bytes());
        assert!(refused(&body, Some(n)).contains("shape holds 2 FP32 elements"));
        // Bytes left over after the last input.
        let header = serde_json::json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}]});
        let (body, n) = binary_body(&header, &[0u8; 6]);
        assert!(refused(&body, Some(n)).contains("2 bytes of binary data follow"));
        // More than there is.
        let header = serde_json::json!({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]});
        let (body, n) = binary_body(&header, &[0u8; 4]);
        assert!(refused(&body, Some(n)).contains("only 4 bytes of binary data are left"));
        // A BYTES element cut short, and a length past the end.
        let header = serde_json::json!({"inputs": [{"name": "c", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 2}}]});
        let (body, n) = binary_body(&header, &[1, 0]);
        assert!(refused(&body, Some(n)).contains("cut short"));
        let header = serde_json::json!({"inputs": [{"name": "c", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 5}}]});
        let (body, n) = binary_body(&header, &[9, 0, 0, 0, b'a']);
        assert!(refused(&body, Some(n)).contains("says 9 bytes"));
        // Two BYTES elements for a shape of one.
        let mut two = bytes_element(b"a");
        two.extend(bytes_element(b"b"));
        let header = serde_json::json!({"inputs": [{"name": "c", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": two.len()}}]});
        let (body, n) = binary_body(&header, &two);
        assert!(refused(&body, Some(n)).contains("has 2 elements but its shape [1] holds 1"));
        // JSON: wrong counts, datatypes, shapes.
        let json =
            |input: Value| serde_json::to_vec(&serde_json::json!({"inputs": [input]})).unwrap();
        let cases = [
            (
                serde_json::json!({"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3]}),
                "has 3 elements but its shape [1, 4] holds 4",
            ),
            (
                serde_json::json!({"name": "x", "shape": [1], "datatype": "FP33", "data": [1]}),
                "unknown datatype `FP33`",
            ),
            (
                serde_json::json!({"name": "x", "shape": [1], "datatype": "BYTES", "data": [1]}),
                "datatype BYTES but `data` holds numbers",
            ),
            (
                serde_json::json!({"name": "x", "shape": [1], "datatype": "FP32", "data": ["a"]}),
                "datatype FP32 but `data` holds strings",
            ),
            (
                serde_json::json!({"name": "x", "shape": [1], "datatype": "INT64", "data": [1.5]}),
                "not an integer",
            ),
            (
                serde_json::json!({"name": "x", "shape": [-1, 4], "datatype": "FP32", "data": [1]}),
                "negative dimension",
            ),
            (
                serde_json::json!({"name": "x", "shape": [2], "datatype": "FP32", "data": [1, "a"]}),
                "mixes",
            ),
            (serde_json::json!({"name": "x", "shape": [1], "datatype": "FP32"}), "has no data"),
            (
                serde_json::json!({"name": "x", "shape": [], "datatype": "FP32", "data": [1]}),
                "shape []",
            ),
            (
                serde_json::json!({"name": "x", "shape": [1], "datatype": "FP16", "data": [1]}),
                "must be sent as binary",
            ),
            (
                serde_json::json!({"name": "x", "shape": [1], "datatype": "FP32", "data": [1], "parameters": {"shared_memory_region": "r"}}),
                "shared memory is not supported",
            ),
        ];
        for (input, want) in cases {
            let message = refused(&json(input.clone()), None);
            assert!(message.contains(want), "{input}: {message}");
        }
        let two = serde_json::to_vec(&serde_json::json!({"inputs": [
            {"name": "a", "shape": [2], "datatype": "FP32", "data": [1, 2]},
            {"name": "b", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]}]}))
        .unwrap();
        assert!(refused(&two, None).contains("`a` has 2 rows, `b` has 3"));
        let twice = serde_json::to_vec(&serde_json::json!({"inputs": [
            {"name": "a", "shape": [1], "datatype": "FP32", "data": [1]},
            {"name": "a", "shape": [1], "datatype": "FP32", "data": [2]}]}))
        .unwrap();
        assert!(refused(&twice, None).contains("given twice"));
        assert!(refused(br#"{"inputs": []}"#, None).contains("no inputs"));
        assert!(refused(br#"{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}], "parameters": {"binary_data_output": 1}}"#, None).contains("must be a boolean"));
    }

    #[test]
    fn outputs_are_json_unless_asked_in_binary_and_binary_follows_the_header() {
        let outputs = [
            Output {
                name: "label",
                shape: vec![2],
                data: OutputData::Bytes(vec!["a".into(), "bc".into()]),
                binary: true,
            },
            Output {
                name: "probabilities",
                shape: vec![2, 2],
                data: OutputData::F32(vec![0.25, 0.75, 1.0, 0.0]),
                binary: false,
            },
            Output {
                name: "value",
                shape: vec![1],
                data: OutputData::F64(vec![2.5]),
                binary: true,
            },
        ];
        let encoded = write_response("iris", 3, Some("abc"), &outputs);
        let n = encoded.header_len.unwrap();
        let header: Value = serde_json::from_slice(&encoded.body[..n]).unwrap();
        assert_eq!(header["model_name"], "iris");
        assert_eq!(header["model_version"], "3");
        assert_eq!(header["id"], "abc");
        assert_eq!(header["outputs"][0]["datatype"], "BYTES");
        assert_eq!(header["outputs"][0]["parameters"]["binary_data_size"], 4 + 1 + 4 + 2);
        assert!(header["outputs"][0].get("data").is_none());
        assert_eq!(header["outputs"][1]["data"], serde_json::json!([0.25, 0.75, 1.0, 0.0]));
        assert_eq!(header["outputs"][2]["parameters"]["binary_data_size"], 8);
        let mut want = bytes_element(b"a");
        want.extend(bytes_element(b"bc"));
        want.extend(2.5f64.to_le_bytes());
        assert_eq!(&encoded.body[n..], want.as_slice());

        let json_only = write_response("iris", 3, None, &outputs[1..2]);
        assert_eq!(json_only.header_len, None);
        let body: Value = serde_json::from_slice(&json_only.body).unwrap();
        assert!(body.get("id").is_none());
        assert_eq!(body["outputs"][0]["shape"], serde_json::json!([2, 2]));
    }
}
