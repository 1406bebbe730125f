//! Object kinds: the model-independent vocabulary the town's scenarios reason with (person,
//! car, bicycle, garbage, laundry, water, fire…). Model cards map their own labels onto these
//! (the inference stage's `kinds`); zones and scenarios name kinds, never label strings.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a detected object is, as far as the scenarios care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    Person,
    Bicycle,
    Motorcycle,
    /// Three-wheelers (cargo and passenger tricycles).
    Tricycle,
    Car,
    Bus,
    Truck,
    /// A vehicle the model does not tell apart (Open Images "Vehicle").
    Vehicle,
    Umbrella,
    Chair,
    Table,
    Bench,
    Backpack,
    Handbag,
    Suitcase,
    /// Boxes, cartons, crates.
    Box,
    Bottle,
    Cup,
    PottedPlant,
    Dog,
    Cat,
    /// Other animals (birds, livestock).
    Animal,
    Fire,
    Smoke,
    Garbage,
    /// Laundry and bedding hung along the street (沿街晾挂).
    Laundry,
    /// Standing water on a road (道路积水).
    Water,
    /// Anything the card does not map.
    Other,
}

impl ObjectKind {
    /// Every kind, in declaration order.
    pub const ALL: [ObjectKind; 28] = [
        ObjectKind::Person,
        ObjectKind::Bicycle,
        ObjectKind::Motorcycle,
        ObjectKind::Tricycle,
        ObjectKind::Car,
        ObjectKind::Bus,
        ObjectKind::Truck,
        ObjectKind::Vehicle,
        ObjectKind::Umbrella,
        ObjectKind::Chair,
        ObjectKind::Table,
        ObjectKind::Bench,
        ObjectKind::Backpack,
        ObjectKind::Handbag,
        ObjectKind::Suitcase,
        ObjectKind::Box,
        ObjectKind::Bottle,
        ObjectKind::Cup,
        ObjectKind::PottedPlant,
        ObjectKind::Dog,
        ObjectKind::Cat,
        ObjectKind::Animal,
        ObjectKind::Fire,
        ObjectKind::Smoke,
        ObjectKind::Garbage,
        ObjectKind::Laundry,
        ObjectKind::Water,
        ObjectKind::Other,
    ];

    /// The snake_case name used in cards and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Person => "person",
            ObjectKind::Bicycle => "bicycle",
            ObjectKind::Motorcycle => "motorcycle",
            ObjectKind::Tricycle => "tricycle",
            ObjectKind::Car => "car",
            ObjectKind::Bus => "bus",
            ObjectKind::Truck => "truck",
            ObjectKind::Vehicle => "vehicle",
            ObjectKind::Umbrella => "umbrella",
            ObjectKind::Chair => "chair",
            ObjectKind::Table => "table",
            ObjectKind::Bench => "bench",
            ObjectKind::Backpack => "backpack",
            ObjectKind::Handbag => "handbag",
            ObjectKind::Suitcase => "suitcase",
            ObjectKind::Box => "box",
            ObjectKind::Bottle => "bottle",
            ObjectKind::Cup => "cup",
            ObjectKind::PottedPlant => "potted_plant",
            ObjectKind::Dog => "dog",
            ObjectKind::Cat => "cat",
            ObjectKind::Animal => "animal",
            ObjectKind::Fire => "fire",
            ObjectKind::Smoke => "smoke",
            ObjectKind::Garbage => "garbage",
            ObjectKind::Laundry => "laundry",
            ObjectKind::Water => "water",
            ObjectKind::Other => "other",
        }
    }

    /// Motor vehicles with four or more wheels, of any kind the model distinguishes.
    pub fn is_motor_vehicle(self) -> bool {
        matches!(
            self,
            ObjectKind::Car | ObjectKind::Bus | ObjectKind::Truck | ObjectKind::Vehicle
        )
    }

    /// Two- and three-wheelers.
    pub fn is_two_or_three_wheeler(self) -> bool {
        matches!(
            self,
            ObjectKind::Bicycle | ObjectKind::Motorcycle | ObjectKind::Tricycle
        )
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The label prefix of a learned zone state's detections (`state:waterlogging`): the scenario
/// rules of a zone served by a state count only these.
pub const STATE_LABEL_PREFIX: &str = "state:";

/// The label a learned zone state's detections carry.
pub fn state_label(scenario: &str) -> String {
    format!("{STATE_LABEL_PREFIX}{scenario}")
}

/// A learned zone state's detection: it stands for its zone, never for one more object of its
/// kind (a crowd's person count, another rule's cars, a companion).
pub fn is_state_label(label: &str) -> bool {
    label.starts_with(STATE_LABEL_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde() {
        for k in ObjectKind::ALL {
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
            let back: ObjectKind = serde_json::from_str(&json).unwrap();
            assert_eq!(back, k);
        }
        assert_eq!(
            serde_json::from_str::<ObjectKind>("\"potted_plant\"").unwrap(),
            ObjectKind::PottedPlant
        );
    }
}
