//! A check that a serializable result holds no NaN or ∞, naming the path of the first
//! one found (e.g. `analysis.usl.Ok.sigma_ci.hi`).
//!
//! Why a serializer: `serde_json` silently writes non-finite floats as `null`, so a NaN
//! would reach a report unnoticed. Walking the same `Serialize` impl the report uses
//! checks exactly what is written, and new fields are covered without listing them.
//!
//! Must never: allocate per value beyond the path it reports.

use std::fmt;

use serde::ser::{self, Serialize};

/// The first non-finite value and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonFinite(pub String);

impl fmt::Display for NonFinite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NonFinite {}

impl ser::Error for NonFinite {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        NonFinite(msg.to_string())
    }
}

/// Ok when every float in `value` (as serialized) is finite; else the path of the first
/// that is not. A float serialized as `null` on purpose (`Option::None`) is fine.
pub fn check<T: Serialize + ?Sized>(value: &T) -> Result<(), NonFinite> {
    value.serialize(&mut Walker { path: Vec::new() })
}

struct Walker {
    path: Vec<String>,
}

impl Walker {
    fn float(&self, v: f64) -> Result<(), NonFinite> {
        if v.is_finite() {
            Ok(())
        } else {
            Err(NonFinite(format!(
                "{} is {v}",
                if self.path.is_empty() {
                    "the value".to_string()
                } else {
                    self.path.join(".")
                }
            )))
        }
    }

    fn nested<T: Serialize + ?Sized>(&mut self, key: String, v: &T) -> Result<(), NonFinite> {
        self.path.push(key);
        v.serialize(&mut *self)?;
        self.path.pop();
        Ok(())
    }
}

/// Compound state: the index of the next element.
struct Compound<'a> {
    w: &'a mut Walker,
    index: usize,
}

impl Compound<'_> {
    fn element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), NonFinite> {
        let key = format!("[{}]", self.index);
        self.index += 1;
        self.w.nested(key, v)
    }
}

macro_rules! ok_scalars {
    ($($name:ident: $t:ty),*) => {
        $(fn $name(self, _: $t) -> Result<(), NonFinite> { Ok(()) })*
    };
}

impl<'a> ser::Serializer for &'a mut Walker {
    type Ok = ();
    type Error = NonFinite;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Compound<'a>;
    type SerializeMap = Compound<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Compound<'a>;

    ok_scalars!(serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
        serialize_i64: i64, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32,
        serialize_u64: u64, serialize_char: char, serialize_str: &str, serialize_bytes: &[u8]);

    fn serialize_f32(self, v: f32) -> Result<(), NonFinite> {
        self.float(v as f64)
    }
    fn serialize_f64(self, v: f64) -> Result<(), NonFinite> {
        self.float(v)
    }
    fn serialize_none(self) -> Result<(), NonFinite> {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<(), NonFinite> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), NonFinite> {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), NonFinite> {
        Ok(())
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<(), NonFinite> {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<(), NonFinite> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<(), NonFinite> {
        self.nested(variant.to_string(), v)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Compound<'a>, NonFinite> {
        Ok(Compound { w: self, index: 0 })
    }
    fn serialize_tuple(self, _: usize) -> Result<Compound<'a>, NonFinite> {
        Ok(Compound { w: self, index: 0 })
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Compound<'a>, NonFinite> {
        Ok(Compound { w: self, index: 0 })
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Compound<'a>, NonFinite> {
        self.path.push(variant.to_string());
        Ok(Compound { w: self, index: 0 })
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Compound<'a>, NonFinite> {
        Ok(Compound { w: self, index: 0 })
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Compound<'a>, NonFinite> {
        Ok(Compound { w: self, index: 0 })
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Compound<'a>, NonFinite> {
        self.path.push(variant.to_string());
        Ok(Compound { w: self, index: 0 })
    }
}

impl ser::SerializeSeq for Compound<'_> {
    type Ok = ();
    type Error = NonFinite;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), NonFinite> {
        self.element(v)
    }
    fn end(self) -> Result<(), NonFinite> {
        Ok(())
    }
}

impl ser::SerializeTuple for Compound<'_> {
    type Ok = ();
    type Error = NonFinite;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), NonFinite> {
        self.element(v)
    }
    fn end(self) -> Result<(), NonFinite> {
        Ok(())
    }
}

impl ser::SerializeTupleStruct for Compound<'_> {
    type Ok = ();
    type Error = NonFinite;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), NonFinite> {
        self.element(v)
    }
    fn end(self) -> Result<(), NonFinite> {
        Ok(())
    }
}

impl ser::SerializeTupleVariant for Compound<'_> {
    type Ok = ();
    type Error = NonFinite;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), NonFinite> {
        self.element(v)
    }
    fn end(self) -> Result<(), NonFinite> {
        self.w.path.pop();
        Ok(())
    }
}

impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = NonFinite;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), NonFinite> {
        self.w.nested("<key>".into(), k)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), NonFinite> {
        self.element(v)
    }
    fn end(self) -> Result<(), NonFinite> {
        Ok(())
    }
}

impl ser::SerializeStruct for Compound<'_> {
    type Ok = ();
    type Error = NonFinite;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), NonFinite> {
        self.w.nested(key.to_string(), v)
    }
    fn end(self) -> Result<(), NonFinite> {
        Ok(())
    }
}

impl ser::SerializeStructVariant for Compound<'_> {
    type Ok = ();
    type Error = NonFinite;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), NonFinite> {
        self.w.nested(key.to_string(), v)
    }
    fn end(self) -> Result<(), NonFinite> {
        self.w.path.pop();
        Ok(())
    }
}

/// True when `text` contains `NaN`, `inf` or `∞` as a word (how Rust formats non-finite
/// floats), so rendered reports can be checked the same way.
pub fn text_has_non_finite(text: &str) -> bool {
    text.contains('∞')
        || text
            .split(|c: char| !c.is_alphanumeric())
            .any(|w| w == "NaN" || w == "inf" || w == "nan")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize)]
    struct Inner {
        ok: f64,
        pairs: Vec<(String, f64)>,
        opt: Option<f64>,
    }

    #[derive(serde::Serialize)]
    enum Wrap {
        Ok(Inner),
    }

    #[test]
    fn names_the_path_of_the_first_non_finite_value() {
        let good = Wrap::Ok(Inner {
            ok: 1.0,
            pairs: vec![("a".into(), 2.0)],
            opt: None,
        });
        assert_eq!(check(&good), Ok(()));
        let bad = Wrap::Ok(Inner {
            ok: 1.0,
            pairs: vec![("a".into(), 2.0), ("b".into(), f64::NAN)],
            opt: Some(3.0),
        });
        assert_eq!(check(&bad).unwrap_err().0, "Ok.pairs.[1].[1] is NaN");
        let inf = Inner {
            ok: f64::INFINITY,
            pairs: vec![],
            opt: None,
        };
        assert_eq!(check(&inf).unwrap_err().0, "ok is inf");
        let mut map = std::collections::BTreeMap::new();
        map.insert("k", f64::NEG_INFINITY);
        assert!(check(&map).is_err());
    }

    #[test]
    fn finds_non_finite_words_in_text() {
        assert!(text_has_non_finite("N* NaN, max inf req/s"));
        assert!(text_has_non_finite("peak -inf"));
        assert!(!text_has_non_finite("infeasible information, financial"));
    }
}
