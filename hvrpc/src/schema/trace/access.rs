//! The serde access types a tracing pass hands to visitors: sequences, maps (and structs
//! presented by field name), and the enum variant the pass chose.

use serde::de::{
    self, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess, VariantAccess,
    Visitor,
};

use super::{Pass, TraceError, err};
use crate::schema::{Field, VariantShape};

/// A sequence (or tuple, or struct read by position) of `left` made-up elements.
pub(super) struct Elements<'a, 'p> {
    pub(super) pass: &'a mut Pass<'p>,
    pub(super) left: usize,
    pub(super) nodes: &'a mut Vec<u32>,
}

impl<'de> SeqAccess<'de> for Elements<'_, '_> {
    type Error = TraceError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, TraceError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let value = seed.deserialize(&mut *self.pass)?;
        self.nodes.push(self.pass.last);
        Ok(Some(value))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

/// A map of one made-up entry, or a struct presented by field name with one field left out.
pub(super) struct Entries<'a, 'p> {
    pub(super) pass: &'a mut Pass<'p>,
    pub(super) left: usize,
    /// A struct's fields and the one to leave out.
    pub(super) names: Option<(&'static [&'static str], usize)>,
    pub(super) at: usize,
    pub(super) nodes: &'a mut Vec<u32>,
}

impl<'de> MapAccess<'de> for Entries<'_, '_> {
    type Error = TraceError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, TraceError> {
        match self.names {
            None => {
                if self.left == 0 {
                    return Ok(None);
                }
                self.left -= 1;
                let key = seed.deserialize(&mut *self.pass)?;
                self.nodes.push(self.pass.last);
                Ok(Some(key))
            }
            Some((names, omit)) => {
                if self.at == omit {
                    self.at += 1;
                }
                let Some(name) = names.get(self.at) else {
                    return Ok(None);
                };
                let key: de::value::StrDeserializer<'_, TraceError> = name.into_deserializer();
                seed.deserialize(key).map(Some)
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, TraceError> {
        let value = seed.deserialize(&mut *self.pass)?;
        match self.names {
            None => self.nodes.push(self.pass.last),
            Some(_) => self.at += 1,
        }
        Ok(value)
    }
}

/// An enum's variant chosen by the pass; what it holds is written down in `shape`.
pub(super) struct Choice<'a, 'p> {
    pub(super) pass: &'a mut Pass<'p>,
    pub(super) index: usize,
    pub(super) shape: &'a mut Option<VariantShape>,
}

impl<'de, 'a, 'p> EnumAccess<'de> for Choice<'a, 'p> {
    type Error = TraceError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self), TraceError> {
        let index = u32::try_from(self.index).map_err(|_| err("too many variants"))?;
        let d: de::value::U32Deserializer<TraceError> = index.into_deserializer();
        let value = seed.deserialize(d)?;
        Ok((value, self))
    }
}

impl<'de> VariantAccess<'de> for Choice<'_, '_> {
    type Error = TraceError;

    fn unit_variant(self) -> Result<(), TraceError> {
        *self.shape = Some(VariantShape::Unit);
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, TraceError> {
        let value = seed.deserialize(&mut *self.pass)?;
        *self.shape = Some(VariantShape::Newtype(self.pass.last));
        Ok(value)
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let mut items = Vec::new();
        let value = visitor.visit_seq(Elements {
            pass: &mut *self.pass,
            left: len,
            nodes: &mut items,
        })?;
        *self.shape = Some(VariantShape::Tuple(items));
        Ok(value)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let mut items = Vec::new();
        let value = visitor.visit_seq(Elements {
            pass: &mut *self.pass,
            left: fields.len(),
            nodes: &mut items,
        })?;
        *self.shape = Some(VariantShape::Struct(
            fields
                .iter()
                .zip(items)
                .map(|(f, node)| Field {
                    name: (*f).into(),
                    node,
                    optional: false,
                })
                .collect(),
        ));
        Ok(value)
    }
}
