//! Which dispatch targets a case goes to. The case stage routes each case once, when it is
//! stored, and writes one delivery row per target in the same transaction; the rules are the
//! `routes` of `[dispatch]` and of each `[[dispatch.targets]]`, handed over as a [`Routing`].

use serde::Deserialize;

/// The id of the `[dispatch]` endpoint when `[dispatch] id` is not set. Outboxes from before
/// routing existed are migrated to deliveries to this target.
pub const PRIMARY_TARGET_ID: &str = "primary";

/// A routing rule: it matches a case when every field it gives matches (a field left out
/// matches anything). `zone_tags` matches when the case's zone has at least one of the tags.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[serde(default)]
    pub units: Option<Vec<String>>,
    #[serde(default)]
    pub zone_tags: Option<Vec<String>>,
    #[serde(default)]
    pub scenarios: Option<Vec<String>>,
}

impl Route {
    pub fn matches(&self, unit: &str, zone_tags: &[String], scenario: &str) -> bool {
        self.units
            .as_ref()
            .is_none_or(|u| u.iter().any(|x| x == unit))
            && self
                .zone_tags
                .as_ref()
                .is_none_or(|t| t.iter().any(|x| zone_tags.contains(x)))
            && self
                .scenarios
                .as_ref()
                .is_none_or(|s| s.iter().any(|x| x == scenario))
    }
}

/// A target takes a case when any of its routes matches, or always when it has none.
fn takes(routes: &[Route], unit: &str, zone_tags: &[String], scenario: &str) -> bool {
    routes.is_empty() || routes.iter().any(|r| r.matches(unit, zone_tags, scenario))
}

/// Every target's id with its rules, primary first, in configuration order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Routing {
    pub targets: Vec<(String, Vec<Route>)>,
}

impl Routing {
    /// The ids of the targets a case goes to, primary first, in configuration order.
    pub fn route(&self, unit: &str, zone_tags: &[String], scenario: &str) -> Vec<String> {
        self.targets
            .iter()
            .filter(|(_, routes)| takes(routes, unit, zone_tags, scenario))
            .map(|(id, _)| id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(v: &[&str]) -> Option<Vec<String>> {
        Some(v.iter().map(|s| (*s).to_owned()).collect())
    }

    #[test]
    fn a_rule_needs_every_given_field_and_a_target_any_rule() {
        let border = ["border".to_owned(), "bridge".to_owned()];
        let rule = Route {
            units: list(&["cbd"]),
            zone_tags: list(&["border"]),
            scenarios: list(&["crowd_gathering", "straw_burning"]),
        };
        assert!(rule.matches("cbd", &border, "straw_burning"));
        assert!(!rule.matches("res", &border, "straw_burning"), "unit");
        assert!(!rule.matches("cbd", &[], "straw_burning"), "tag");
        assert!(!rule.matches("cbd", &border, "illegal_parking"), "scenario");
        assert!(
            Route::default().matches("x", &[], "y"),
            "no field: anything"
        );
        let fires = Route {
            scenarios: list(&["straw_burning"]),
            ..Route::default()
        };
        let routes = [rule, fires];
        assert!(takes(&routes, "res", &[], "straw_burning"));
        assert!(!takes(&routes, "res", &[], "crowd_gathering"));
        assert!(
            takes(&[], "res", &[], "crowd_gathering"),
            "no routes: every case"
        );
    }
}
