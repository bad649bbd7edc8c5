//! The serde access types translation hands to the reader's visitors: a sequence's or tuple's
//! items, a map's entries, a struct's fields by name, the variant the writer sent.

use serde::de::{
    self, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess, VariantAccess,
    Visitor,
};

use super::{At, TrError};
use crate::schema::{Field, VariantShape};

pub(super) enum ItemNodes<'g> {
    Repeat(u32, usize),
    List(&'g [u32], usize),
}

pub(super) struct Items<'a, 'de> {
    pub(super) at: At<'a, 'de>,
    pub(super) nodes: ItemNodes<'a>,
}

impl<'de> SeqAccess<'de> for Items<'_, 'de> {
    type Error = TrError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, TrError> {
        let node = match &mut self.nodes {
            ItemNodes::Repeat(_, 0) => return Ok(None),
            ItemNodes::Repeat(node, left) => {
                *left -= 1;
                *node
            }
            ItemNodes::List(list, i) => match list.get(*i) {
                None => return Ok(None),
                Some(&node) => {
                    *i += 1;
                    node
                }
            },
        };
        seed.deserialize(self.at.at(node)?).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(match &self.nodes {
            ItemNodes::Repeat(_, left) => *left,
            ItemNodes::List(list, i) => list.len().saturating_sub(*i),
        })
    }
}

pub(super) struct Entries<'a, 'de> {
    pub(super) at: At<'a, 'de>,
    pub(super) key: u32,
    pub(super) value: u32,
    pub(super) left: usize,
}

impl<'de> MapAccess<'de> for Entries<'_, 'de> {
    type Error = TrError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, TrError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let key = self.key;
        seed.deserialize(self.at.at(key)?).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, TrError> {
        let value = self.value;
        seed.deserialize(self.at.at(value)?)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

/// A struct's fields, by name, in the writer's order.
pub(super) struct Fields<'a, 'de> {
    pub(super) at: At<'a, 'de>,
    pub(super) fields: &'a [Field],
    pub(super) i: usize,
}

impl<'de> MapAccess<'de> for Fields<'_, 'de> {
    type Error = TrError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, TrError> {
        let Some(f) = self.fields.get(self.i) else {
            return Ok(None);
        };
        let name: de::value::StrDeserializer<'_, TrError> = f.name.as_str().into_deserializer();
        seed.deserialize(name).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, TrError> {
        let node = self
            .fields
            .get(self.i)
            .map(|f| f.node)
            .ok_or_else(|| TrError("a value without its field".into()))?;
        self.i += 1;
        seed.deserialize(self.at.at(node)?)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.fields.len().saturating_sub(self.i))
    }
}

/// The variant the writer sent, by name.
pub(super) struct Chosen<'a, 'de> {
    pub(super) at: At<'a, 'de>,
    pub(super) name: &'a str,
    pub(super) shape: &'a VariantShape,
}

impl<'a, 'de> EnumAccess<'de> for Chosen<'a, 'de> {
    type Error = TrError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), TrError> {
        let name: de::value::StrDeserializer<'_, TrError> = self.name.into_deserializer();
        let value = seed.deserialize(name)?;
        Ok((value, self))
    }
}

impl<'de> VariantAccess<'de> for Chosen<'_, 'de> {
    type Error = TrError;

    fn unit_variant(self) -> Result<(), TrError> {
        match self.shape {
            VariantShape::Unit => Ok(()),
            _ => Err(TrError(format!("variant {} holds a value", self.name))),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        mut self,
        seed: T,
    ) -> Result<T::Value, TrError> {
        match self.shape {
            VariantShape::Newtype(c) => seed.deserialize(self.at.at(*c)?),
            // A reader that cannot know the shape (one that asks `deserialize_any`) takes any
            // variant as a newtype of what it holds: nothing, a sequence, a map of fields.
            // The bytes are the same.
            shape => seed.deserialize(Body { at: self.at, shape }),
        }
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, TrError> {
        match self.shape {
            VariantShape::Tuple(cs) if cs.len() == len => visitor.visit_seq(Items {
                at: self.at,
                nodes: ItemNodes::List(cs, 0),
            }),
            _ => Err(TrError(format!(
                "variant {} is not a tuple variant of {len}",
                self.name
            ))),
        }
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TrError> {
        match self.shape {
            VariantShape::Struct(fields) => visitor.visit_map(Fields {
                at: self.at,
                fields,
                i: 0,
            }),
            _ => Err(TrError(format!(
                "variant {} is not a struct variant",
                self.name
            ))),
        }
    }
}

/// What a unit, tuple or struct variant holds, as one value.
struct Body<'a, 'de> {
    at: At<'a, 'de>,
    shape: &'a VariantShape,
}

impl<'de> de::Deserializer<'de> for Body<'_, 'de> {
    type Error = TrError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TrError> {
        match self.shape {
            VariantShape::Unit => visitor.visit_unit(),
            VariantShape::Newtype(c) => {
                let mut at = self.at;
                de::Deserializer::deserialize_any(at.at(*c)?, visitor)
            }
            VariantShape::Tuple(cs) => visitor.visit_seq(Items {
                at: self.at,
                nodes: ItemNodes::List(cs, 0),
            }),
            VariantShape::Struct(fields) => visitor.visit_map(Fields {
                at: self.at,
                fields,
                i: 0,
            }),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}
