//! Header facts read from MSH: message type, trigger, structure, control id, version, parties,
//! processing id, acknowledgment types, sequence number, character set.

use super::model::{Segment, Value};
use serde::Serialize;
use std::borrow::Cow;

/// A hierarchic designator (HD): namespace id, universal id, universal id type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Hd<'a> {
    /// HD.1
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace_id: Option<Cow<'a, str>>,
    /// HD.2
    #[serde(skip_serializing_if = "Option::is_none")]
    pub universal_id: Option<Cow<'a, str>>,
    /// HD.3
    #[serde(skip_serializing_if = "Option::is_none")]
    pub universal_id_type: Option<Cow<'a, str>>,
}

impl<'a> Hd<'a> {
    fn from_value(v: Value<'a>) -> Self {
        Hd {
            namespace_id: v.component(1).text(),
            universal_id: v.component(2).text(),
            universal_id_type: v.component(3).text(),
        }
    }

    /// True when no component is valued.
    pub fn is_empty(&self) -> bool {
        self.namespace_id.is_none()
            && self.universal_id.is_none()
            && self.universal_id_type.is_none()
    }

    /// A stable one-line form, `namespace^universal^type` with trailing empties trimmed.
    pub fn to_key(&self) -> String {
        let parts = [
            &self.namespace_id,
            &self.universal_id,
            &self.universal_id_type,
        ];
        let mut s: Vec<&str> = parts.iter().map(|p| p.as_deref().unwrap_or("")).collect();
        while s.last() == Some(&"") {
            s.pop();
        }
        s.join("^")
    }
}

/// Facts from the MSH segment, decoded. Borrowed from the input where no decoding was needed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Header<'a> {
    /// MSH-3
    pub sending_application: Hd<'a>,
    /// MSH-4
    pub sending_facility: Hd<'a>,
    /// MSH-5
    pub receiving_application: Hd<'a>,
    /// MSH-6
    pub receiving_facility: Hd<'a>,
    /// MSH-7.1, as sent (HL7 DTM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datetime: Option<Cow<'a, str>>,
    /// MSH-9.1, e.g. `ADT`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_code: Option<Cow<'a, str>>,
    /// MSH-9.2, e.g. `A01`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger_event: Option<Cow<'a, str>>,
    /// MSH-9.3, e.g. `ADT_A01` (often missing before v2.4).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_structure: Option<Cow<'a, str>>,
    /// MSH-10.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_id: Option<Cow<'a, str>>,
    /// MSH-11.1: `P`, `T`, `D`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processing_id: Option<Cow<'a, str>>,
    /// MSH-12.1, e.g. `2.5.1`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<Cow<'a, str>>,
    /// MSH-13.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<Cow<'a, str>>,
    /// MSH-15: `AL`, `NE`, `ER`, `SU`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept_ack_type: Option<Cow<'a, str>>,
    /// MSH-16: `AL`, `NE`, `ER`, `SU`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_ack_type: Option<Cow<'a, str>>,
    /// MSH-17.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<Cow<'a, str>>,
    /// MSH-18, first repetition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub character_set: Option<Cow<'a, str>>,
    /// MSH-19.1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal_language: Option<Cow<'a, str>>,
    /// MSH-21 repetitions, entity identifier (.1) of each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<Cow<'a, str>>,
}

impl<'a> Header<'a> {
    /// Read the facts from an MSH segment.
    pub fn from_msh(msh: &Segment<'_, 'a>) -> Header<'a> {
        let f = |n: usize| msh.field(n);
        let c = |n: usize, k: usize| msh.field(n).component(k).text();
        Header {
            sending_application: Hd::from_value(f(3)),
            sending_facility: Hd::from_value(f(4)),
            receiving_application: Hd::from_value(f(5)),
            receiving_facility: Hd::from_value(f(6)),
            datetime: c(7, 1),
            message_code: c(9, 1),
            trigger_event: c(9, 2),
            message_structure: c(9, 3),
            control_id: f(10).text(),
            processing_id: c(11, 1),
            version: c(12, 1),
            sequence_number: f(13).text(),
            accept_ack_type: f(15).text(),
            application_ack_type: f(16).text(),
            country: f(17).text(),
            character_set: f(18).rep(1).text(),
            principal_language: c(19, 1),
            profiles: f(21)
                .children()
                .filter_map(|r| r.component(1).text())
                .collect(),
        }
    }

    /// `type^trigger`, e.g. `ADT^A01` (empty parts kept empty).
    pub fn message_type(&self) -> String {
        format!(
            "{}^{}",
            self.message_code.as_deref().unwrap_or(""),
            self.trigger_event.as_deref().unwrap_or("")
        )
    }

    /// True when MSH-15 or MSH-16 is valued: the sender asks for enhanced-mode acknowledgments.
    pub fn enhanced_mode(&self) -> bool {
        self.accept_ack_type.is_some() || self.application_ack_type.is_some()
    }

    /// The numeric (major, minor) of MSH-12, e.g. `2.5.1` → (2, 5). `None` when unparsable.
    pub fn version_number(&self) -> Option<(u32, u32)> {
        let v = self.version.as_deref()?;
        let mut it = v.split('.');
        let major = it.next()?.trim().parse().ok()?;
        let minor = it
            .next()
            .map(|m| m.trim().parse().unwrap_or(0))
            .unwrap_or(0);
        Some((major, minor))
    }
}
