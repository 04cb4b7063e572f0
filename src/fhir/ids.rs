//! Deterministic resource ids: UUIDv5 over resource type, sender scope, base id and business
//! keys. The same patient from the same sender always gets the same id, so replaying a message
//! changes nothing.

use uuid::Uuid;

/// The v2fhir namespace for UUIDv5 (a fixed random UUID; changing it changes every id).
const NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2b7e_59d4_4c8a_9a3e_0b5d_7c21_f4e9);

/// The id for a resource. Parts are separated by U+001F so that `("ab", "c")` ≠ `("a", "bc")`.
pub fn resource_id(resource_type: &str, scope: &str, base: &str, keys: &[&str]) -> String {
    let mut name = String::with_capacity(64);
    name.push_str(resource_type);
    for p in [scope, base].into_iter().chain(keys.iter().copied()) {
        name.push('\u{1f}');
        name.push_str(p);
    }
    Uuid::new_v5(&NAMESPACE, name.as_bytes()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_distinct() {
        let a = resource_id("Patient", "LAB|EAST", "", &["123", "MRN"]);
        assert_eq!(a, resource_id("Patient", "LAB|EAST", "", &["123", "MRN"]));
        assert_ne!(a, resource_id("Patient", "LAB|WEST", "", &["123", "MRN"]));
        assert_ne!(a, resource_id("Patient", "LAB|EAST", "", &["12", "3MRN"]));
        assert_ne!(a, resource_id("Encounter", "LAB|EAST", "", &["123", "MRN"]));
        assert_eq!(a.len(), 36);
    }
}
