//! Which dispatch targets a case goes to. The case stage routes each case once, when it is
//! stored, and writes one delivery row per target in the same transaction; the rules are the
//! `routes` of `[dispatch]` and of each `[[dispatch.targets]]`, handed over as a [`Routing`].

use serde::Deserialize;

use crate::area::profile::HoursWindow;

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
    /// Local-time windows ("20:00-08:00": the night shift's cases) of the case's confirmation.
    #[serde(default)]
    pub hours: Option<Vec<String>>,
    /// Ids of the key area's `[[phases]]` in force at the case's confirmation.
    #[serde(default)]
    pub phases: Option<Vec<String>>,
}

/// When a case was confirmed, as routes see it: local minute of day and the plan's phase.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteMoment {
    pub minute_of_day: u16,
    pub phase: Option<String>,
}

impl Route {
    /// Checks of the rule itself (hour windows parse); ids are checked against the key area by
    /// the configuration.
    pub fn validate(&self, at: &str, err: &mut impl FnMut(String, String)) {
        for (k, h) in self.hours.iter().flatten().enumerate() {
            if let Err(e) = HoursWindow::parse(h) {
                err(format!("{at}.hours[{k}]"), e);
            }
        }
    }

    /// Whether the rule matches at `when`; `None`: at some time (hours and phases ignored).
    pub fn matches_at(
        &self,
        unit: &str,
        zone_tags: &[String],
        scenario: &str,
        when: Option<&RouteMoment>,
    ) -> bool {
        self.matches(unit, zone_tags, scenario)
            && when.is_none_or(|w| {
                self.hours.as_ref().is_none_or(|hs| {
                    hs.iter()
                        .filter_map(|h| HoursWindow::parse(h).ok())
                        .any(|h| h.contains(w.minute_of_day))
                }) && self
                    .phases
                    .as_ref()
                    .is_none_or(|ps| w.phase.as_ref().is_some_and(|p| ps.contains(p)))
            })
    }

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
fn takes(
    routes: &[Route],
    (unit, zone_tags, scenario): (&str, &[String], &str),
    when: Option<&RouteMoment>,
) -> bool {
    routes.is_empty()
        || routes
            .iter()
            .any(|r| r.matches_at(unit, zone_tags, scenario, when))
}

/// Every target's id with its rules, primary first, in configuration order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Routing {
    pub targets: Vec<(String, Vec<Route>)>,
}

impl Routing {
    /// The ids of the targets a case confirmed at `when` goes to (`None`: at some time),
    /// primary first, in configuration order.
    pub fn route(
        &self,
        unit: &str,
        zone_tags: &[String],
        scenario: &str,
        when: Option<&RouteMoment>,
    ) -> Vec<String> {
        self.targets
            .iter()
            .filter(|(_, routes)| takes(routes, (unit, zone_tags, scenario), when))
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
            ..Route::default()
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
        assert!(takes(&routes, ("res", &[], "straw_burning"), None));
        assert!(!takes(&routes, ("res", &[], "crowd_gathering"), None));
        assert!(
            takes(&[], ("res", &[], "crowd_gathering"), None),
            "no routes: every case"
        );
    }

    #[test]
    fn night_and_phase_rules_follow_the_confirmation_time() {
        let night = Route {
            hours: list(&["20:00-08:00"]),
            phases: list(&["intensive"]),
            ..Route::default()
        };
        let at = |h: u16, phase: Option<&str>| RouteMoment {
            minute_of_day: h * 60,
            phase: phase.map(str::to_owned),
        };
        assert!(night.matches_at("u", &[], "s", Some(&at(23, Some("intensive")))));
        assert!(night.matches_at("u", &[], "s", Some(&at(7, Some("intensive")))));
        assert!(
            !night.matches_at("u", &[], "s", Some(&at(8, Some("intensive")))),
            "day"
        );
        assert!(
            !night.matches_at("u", &[], "s", Some(&at(23, Some("launch")))),
            "phase"
        );
        assert!(
            !night.matches_at("u", &[], "s", Some(&at(23, None))),
            "no phase"
        );
        assert!(night.matches_at("u", &[], "s", None), "some time");
        let routing = Routing {
            targets: vec![("primary".into(), vec![]), ("night".into(), vec![night])],
        };
        assert_eq!(
            routing.route("u", &[], "s", Some(&at(2, Some("intensive")))),
            ["primary", "night"]
        );
        assert_eq!(
            routing.route("u", &[], "s", Some(&at(12, Some("intensive")))),
            ["primary"]
        );
        let mut errs = Vec::new();
        Route {
            hours: list(&["25:00-08:00"]),
            ..Route::default()
        }
        .validate("routes[0]", &mut |f, m| errs.push((f, m)));
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].0, "routes[0].hours[0]");
    }
}
