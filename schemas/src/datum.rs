//! Avro binary encoding of our record types straight through serde, without building an
//! `apache_avro::types::Value` tree.
//!
//! The generic path (`schema_registry_converter` → `apache_avro`) turns every record into a
//! tree of owned values, looks each field up by name and then walks the tree again to write
//! or read it: most of the per-record cost of a processor. Our record types mirror their
//! `.avsc` exactly (field order, `["null", T]` unions, enum symbol order; the `contract`
//! tests and this module's tests check it), so the Rust type alone determines the layout and
//! serde can write and read the Avro binary encoding directly:
//!
//! | serde | Avro |
//! |---|---|
//! | bool | boolean (one byte) |
//! | i8..i64, u8..u32 | int / long (zig-zag varint) |
//! | f32 / f64 | float / double (little-endian) |
//! | str, bytes | length-prefixed |
//! | `Option` | union `["null", T]`: branch index 0 or 1 |
//! | unit enum variant | enum: symbol index |
//! | struct | record: fields in order |
//! | map, seq | map, array: one block, then the empty block |
//!
//! Only datums written with *our* schema may be read this way; a record written by another
//! schema version needs schema resolution and goes through the generic path (see
//! [`crate::Codec`]). `deserialize_any` is therefore unsupported: Avro binary is not
//! self-describing.

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use serde::ser::{self, Serialize};
use std::fmt;

/// Why a value could not be written or read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatumError(String);

impl fmt::Display for DatumError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DatumError {}

impl ser::Error for DatumError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self(msg.to_string())
    }
}

impl de::Error for DatumError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self(msg.to_string())
    }
}

fn unsupported<T>(what: &str) -> Result<T, DatumError> {
    Err(DatumError(format!(
        "{what} has no place in our Avro contracts"
    )))
}

/// Appends the Avro binary encoding of `value` to `out`.
pub fn write<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), DatumError> {
    value.serialize(&mut Writer { out })
}

/// Reads one `T` from the whole of `bytes` (trailing bytes are an error: they mean the
/// datum was written with another layout).
pub fn read<'de, T: de::Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, DatumError> {
    let mut reader = Reader { input: bytes };
    let value = T::deserialize(&mut reader)?;
    if reader.input.is_empty() {
        Ok(value)
    } else {
        Err(DatumError(format!(
            "{} bytes left after the record: written with another schema",
            reader.input.len()
        )))
    }
}

fn put_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_long(out, b.len() as i64);
    out.extend_from_slice(b);
}

struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

/// Writes a map or array as one counted block followed by the terminating empty block.
struct Block<'w, 'a> {
    w: &'w mut Writer<'a>,
}

impl<'w, 'a> ser::Serializer for &'w mut Writer<'a> {
    type Ok = ();
    type Error = DatumError;
    type SerializeSeq = Block<'w, 'a>;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = ser::Impossible<(), DatumError>;
    type SerializeMap = Block<'w, 'a>;
    type SerializeStruct = Self;
    type SerializeStructVariant = ser::Impossible<(), DatumError>;

    fn serialize_bool(self, v: bool) -> Result<(), DatumError> {
        self.out.push(u8::from(v));
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), DatumError> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i16(self, v: i16) -> Result<(), DatumError> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i32(self, v: i32) -> Result<(), DatumError> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i64(self, v: i64) -> Result<(), DatumError> {
        put_long(self.out, v);
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Result<(), DatumError> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_u16(self, v: u16) -> Result<(), DatumError> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_u32(self, v: u32) -> Result<(), DatumError> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_u64(self, v: u64) -> Result<(), DatumError> {
        let v = i64::try_from(v).map_err(|_| DatumError(format!("{v} does not fit a long")))?;
        self.serialize_i64(v)
    }
    fn serialize_f32(self, v: f32) -> Result<(), DatumError> {
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_f64(self, v: f64) -> Result<(), DatumError> {
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), DatumError> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_str(self, v: &str) -> Result<(), DatumError> {
        put_bytes(self.out, v.as_bytes());
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), DatumError> {
        put_bytes(self.out, v);
        Ok(())
    }
    fn serialize_none(self) -> Result<(), DatumError> {
        put_long(self.out, 0);
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), DatumError> {
        put_long(self.out, 1);
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), DatumError> {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), DatumError> {
        Ok(())
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
    ) -> Result<(), DatumError> {
        self.serialize_i64(i64::from(index))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), DatumError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), DatumError> {
        unsupported("an enum variant with data")
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Block<'w, 'a>, DatumError> {
        let len = len.ok_or_else(|| DatumError("a sequence of unknown length".into()))?;
        if len > 0 {
            put_long(self.out, len as i64);
        }
        Ok(Block { w: self })
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, DatumError> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, DatumError> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, DatumError> {
        unsupported("an enum variant with data")
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Block<'w, 'a>, DatumError> {
        self.serialize_seq(len)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, DatumError> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, DatumError> {
        unsupported("an enum variant with data")
    }
}

impl ser::SerializeSeq for Block<'_, '_> {
    type Ok = ();
    type Error = DatumError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), DatumError> {
        value.serialize(&mut *self.w)
    }
    fn end(self) -> Result<(), DatumError> {
        put_long(self.w.out, 0);
        Ok(())
    }
}

impl ser::SerializeMap for Block<'_, '_> {
    type Ok = ();
    type Error = DatumError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), DatumError> {
        key.serialize(&mut *self.w)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), DatumError> {
        value.serialize(&mut *self.w)
    }
    fn end(self) -> Result<(), DatumError> {
        put_long(self.w.out, 0);
        Ok(())
    }
}

impl ser::SerializeTuple for &mut Writer<'_> {
    type Ok = ();
    type Error = DatumError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), DatumError> {
        value.serialize(&mut **self)
    }
    fn end(self) -> Result<(), DatumError> {
        Ok(())
    }
}

impl ser::SerializeTupleStruct for &mut Writer<'_> {
    type Ok = ();
    type Error = DatumError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), DatumError> {
        value.serialize(&mut **self)
    }
    fn end(self) -> Result<(), DatumError> {
        Ok(())
    }
}

impl ser::SerializeStruct for &mut Writer<'_> {
    type Ok = ();
    type Error = DatumError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _: &'static str,
        value: &T,
    ) -> Result<(), DatumError> {
        value.serialize(&mut **self)
    }
    fn end(self) -> Result<(), DatumError> {
        Ok(())
    }
}

struct Reader<'de> {
    input: &'de [u8],
}

impl<'de> Reader<'de> {
    fn take(&mut self, n: usize) -> Result<&'de [u8], DatumError> {
        if n > self.input.len() {
            return Err(DatumError(format!(
                "truncated datum: wanted {n} bytes, {} left",
                self.input.len()
            )));
        }
        let (head, tail) = self.input.split_at(n);
        self.input = tail;
        Ok(head)
    }

    fn long(&mut self) -> Result<i64, DatumError> {
        let mut z: u64 = 0;
        for shift in (0..64).step_by(7) {
            let [b, rest @ ..] = self.input else {
                return Err(DatumError("truncated datum: varint cut short".into()));
            };
            self.input = rest;
            z |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
            }
        }
        Err(DatumError("varint longer than 10 bytes".into()))
    }

    fn len(&mut self) -> Result<usize, DatumError> {
        let n = self.long()?;
        usize::try_from(n).map_err(|_| DatumError(format!("negative length {n}")))
    }

    fn bytes(&mut self) -> Result<&'de [u8], DatumError> {
        let n = self.len()?;
        self.take(n)
    }

    fn str(&mut self) -> Result<&'de str, DatumError> {
        std::str::from_utf8(self.bytes()?).map_err(|e| DatumError(format!("string: {e}")))
    }

    /// The item count of the next map or array block (a negative count is followed by the
    /// block's byte size, which we do not need).
    fn block_count(&mut self) -> Result<usize, DatumError> {
        let n = self.long()?;
        if n < 0 {
            self.long()?;
        }
        usize::try_from(n.unsigned_abs()).map_err(|_| DatumError("block too large".into()))
    }
}

macro_rules! via_long {
    ($($method:ident => $visit:ident : $t:ty),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DatumError> {
            let v = self.long()?;
            let v = <$t>::try_from(v)
                .map_err(|_| DatumError(format!("{v} out of range for {}", stringify!($t))))?;
            visitor.$visit(v)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for &mut Reader<'de> {
    type Error = DatumError;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, DatumError> {
        unsupported("a self-describing value")
    }
    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DatumError> {
        match self.take(1)? {
            [0] => visitor.visit_bool(false),
            [1] => visitor.visit_bool(true),
            b => Err(DatumError(format!("boolean byte {b:?}"))),
        }
    }
    via_long!(
        deserialize_i8 => visit_i8: i8,
        deserialize_i16 => visit_i16: i16,
        deserialize_i32 => visit_i32: i32,
        deserialize_i64 => visit_i64: i64,
        deserialize_u8 => visit_u8: u8,
        deserialize_u16 => visit_u16: u16,
        deserialize_u32 => visit_u32: u32,
        deserialize_u64 => visit_u64: u64,
    );
    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DatumError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        visitor.visit_f32(f32::from_le_bytes(b))
    }
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DatumError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        visitor.visit_f64(f64::from_le_bytes(b))
    }
    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DatumError> {
        self.deserialize_str(visitor)
    }
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DatumError> {
        visitor.visit_borrowed_str(self.str()?)
    }
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DatumError> {
        self.deserialize_str(visitor)
    }
    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DatumError> {
        visitor.visit_borrowed_bytes(self.bytes()?)
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DatumError> {
        self.deserialize_bytes(visitor)
    }
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DatumError> {
        match self.long()? {
            0 => visitor.visit_none(),
            1 => visitor.visit_some(self),
            b => Err(DatumError(format!(
                "union branch {b}: our optional fields are [\"null\", T]"
            ))),
        }
    }
    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DatumError> {
        visitor.visit_unit()
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, DatumError> {
        visitor.visit_unit()
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, DatumError> {
        visitor.visit_newtype_struct(self)
    }
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DatumError> {
        visitor.visit_seq(Blocks::new(self)?)
    }
    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, DatumError> {
        visitor.visit_seq(Fields { r: self, left: len })
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, DatumError> {
        self.deserialize_tuple(len, visitor)
    }
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DatumError> {
        visitor.visit_map(Blocks::new(self)?)
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DatumError> {
        self.deserialize_tuple(fields.len(), visitor)
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DatumError> {
        let index = self.long()?;
        let index = u32::try_from(index)
            .ok()
            .filter(|i| (*i as usize) < variants.len())
            .ok_or_else(|| {
                DatumError(format!(
                    "enum index {index} out of range for {} symbols",
                    variants.len()
                ))
            })?;
        visitor.visit_enum(index.into_deserializer())
    }
    fn deserialize_identifier<V: Visitor<'de>>(self, _: V) -> Result<V::Value, DatumError> {
        unsupported("a field identifier")
    }
    fn deserialize_ignored_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, DatumError> {
        unsupported("an ignored value")
    }
    fn is_human_readable(&self) -> bool {
        false
    }
}

/// Struct fields and tuple elements: a fixed count, no framing.
struct Fields<'r, 'de> {
    r: &'r mut Reader<'de>,
    left: usize,
}

impl<'de> de::SeqAccess<'de> for Fields<'_, 'de> {
    type Error = DatumError;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DatumError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.r).map(Some)
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

/// Map entries and array items: counted blocks until the empty block.
struct Blocks<'r, 'de> {
    r: &'r mut Reader<'de>,
    left: usize,
    /// The empty block that ends the array or map was read: nothing of it is left to read
    /// (an empty array is that block alone).
    ended: bool,
}

impl<'r, 'de> Blocks<'r, 'de> {
    fn new(r: &'r mut Reader<'de>) -> Result<Self, DatumError> {
        let left = r.block_count()?;
        Ok(Self {
            r,
            left,
            ended: left == 0,
        })
    }

    fn more(&mut self) -> Result<bool, DatumError> {
        if self.left == 0 && !self.ended {
            self.left = self.r.block_count()?;
            self.ended = self.left == 0;
        }
        Ok(self.left > 0)
    }
}

impl<'de> de::SeqAccess<'de> for Blocks<'_, 'de> {
    type Error = DatumError;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DatumError> {
        if !self.more()? {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.r).map(Some)
    }
}

impl<'de> de::MapAccess<'de> for Blocks<'_, 'de> {
    type Error = DatumError;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DatumError> {
        if !self.more()? {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.r).map(Some)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DatumError> {
        seed.deserialize(&mut *self.r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Record;
    use crate::samples;
    use apache_avro::Schema;
    use serde::de::DeserializeOwned;

    /// What the generic `apache_avro` path writes for `value` under `schema`.
    fn generic<T: Serialize>(value: &T, schema: &str) -> Vec<u8> {
        let schema = Schema::parse_str(schema).expect("schema parses");
        let v = apache_avro::to_value(value).expect("to value");
        let v = v.resolve(&schema).expect("resolves");
        apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
            .build()
            .expect("writer")
            .write_value_to_vec(v)
            .expect("datum")
    }

    /// Each side reads what the other wrote; and the bytes are identical unless the record
    /// holds a map (Avro leaves map entry order to the writer; apache_avro's follows a hash).
    fn same_as_generic<T>(value: &T, schema: &str)
    where
        T: Serialize + DeserializeOwned + PartialEq + fmt::Debug,
    {
        let mut fast = Vec::new();
        write(value, &mut fast).expect("fast write");
        let slow = generic(value, schema);
        if !schema.contains("\"map\"") {
            assert_eq!(fast, slow, "bytes differ for {value:?}");
        }
        let back: T = read(&fast).expect("fast read");
        assert_eq!(&back, value);
        let from_slow: T = read(&slow).expect("fast read of generic bytes");
        assert_eq!(&from_slow, value);
        let parsed = Schema::parse_str(schema).expect("schema parses");
        let decoded = apache_avro::reader::datum::GenericDatumReader::builder(&parsed)
            .build()
            .expect("reader")
            .read_value(&mut fast.as_slice())
            .expect("generic read of fast bytes");
        let decoded: T = apache_avro::from_value(&decoded).expect("generic value");
        assert_eq!(&decoded, value);
    }

    /// `sample` and, for every enum field of `schema`, a copy with each of its symbols and,
    /// for every optional field, a copy with it null: so every enum symbol's index and both
    /// union branches are checked against the generic path.
    fn variants<T: Serialize + DeserializeOwned>(sample: &T, schema: &str) -> Vec<T> {
        let schema: serde_json::Value = serde_json::from_str(schema).expect("schema json");
        let base = serde_json::to_value(sample).expect("sample json");
        let mut out = vec![serde_json::from_value(base.clone()).expect("sample back")];
        for field in schema["fields"].as_array().expect("fields") {
            let name = field["name"].as_str().expect("field name");
            let ty = &field["type"];
            let mut copies = Vec::new();
            if ty["type"] == "enum" {
                for symbol in ty["symbols"].as_array().expect("symbols") {
                    let mut c = base.clone();
                    c[name] = symbol.clone();
                    copies.push(c);
                }
            }
            if ty.as_array().is_some_and(|u| u[0] == "null") {
                let mut c = base.clone();
                c[name] = serde_json::Value::Null;
                copies.push(c);
            }
            out.extend(
                copies
                    .into_iter()
                    .map(|c| serde_json::from_value(c).expect("variant")),
            );
        }
        out
    }

    fn check<R: Record + PartialEq + fmt::Debug>(sample: R) {
        for v in variants(&sample, R::TOPIC.schema()) {
            same_as_generic(&v, R::TOPIC.schema());
        }
    }

    #[test]
    fn same_bytes_as_apache_avro_for_every_topic() {
        check(samples::market_data());
        check(samples::features());
        check(samples::trading_signal());
        check(samples::anomaly());
        check(samples::order());
        check(samples::fill());
        check(samples::control());
        check(samples::valuation());
        for v in variants(&samples::dead_letter(), crate::topics::DEAD_LETTER_SCHEMA) {
            same_as_generic(&v, crate::topics::DEAD_LETTER_SCHEMA);
        }
    }

    #[test]
    fn refuses_truncated_and_trailing_bytes() {
        let mut bytes = Vec::new();
        write(&samples::order(), &mut bytes).expect("write");
        for cut in 0..bytes.len() {
            assert!(read::<crate::Order>(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        bytes.push(0);
        assert!(read::<crate::Order>(&bytes).is_err());
    }

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [
            0,
            1,
            -1,
            63,
            -64,
            64,
            i64::from(i32::MAX),
            i64::MIN,
            i64::MAX,
        ] {
            let mut out = Vec::new();
            put_long(&mut out, v);
            let mut r = Reader { input: &out };
            assert_eq!(r.long().expect("read"), v);
            assert!(r.input.is_empty());
        }
    }
}
