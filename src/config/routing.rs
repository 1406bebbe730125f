//! Cross-region routing: the `[dispatch]` endpoint is the primary delivery target, and
//! `[[dispatch.targets]]` adds more (a neighbouring town's command centre), each with its own
//! endpoint, token, field mapping, retries and breaker, and routing rules
//! (`[[dispatch.targets.routes]]`) that say which cases it takes. A case is routed once, when it
//! is stored; each target it goes to gets its own delivery row in the outbox.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;

use super::{Config, DispatchSettings, ImageUpload};

/// The id of the `[dispatch]` endpoint when `[dispatch] id` is not set. Outboxes from before
/// routing existed are migrated to deliveries to this target.
pub const PRIMARY_TARGET_ID: &str = "primary";

/// One more dispatch endpoint (`[[dispatch.targets]]`). Timing, retry and breaker settings left
/// out take the `[dispatch]` values; the token, field map and image upload do not, because they
/// belong to the other platform (the town's token must not go to its neighbour).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchTarget {
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub bearer_token: Option<String>,
    #[serde(default)]
    pub timeout_seconds: Option<f64>,
    #[serde(default)]
    pub retry_initial_seconds: Option<f64>,
    #[serde(default)]
    pub retry_max_seconds: Option<f64>,
    #[serde(default)]
    pub breaker_failure_threshold: Option<u32>,
    #[serde(default)]
    pub breaker_open_seconds: Option<f64>,
    #[serde(default)]
    pub image_upload: ImageUpload,
    #[serde(default)]
    pub field_map: BTreeMap<String, String>,
    /// Which cases this target takes; none: every case.
    #[serde(default)]
    pub routes: Vec<Route>,
}

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

impl DispatchSettings {
    /// The primary target's id (`[dispatch] id`, default `primary`).
    pub fn primary_id(&self) -> &str {
        self.id.as_deref().unwrap_or(PRIMARY_TARGET_ID)
    }

    /// The ids of the targets a case goes to, primary first, in configuration order.
    pub fn route(&self, unit: &str, zone_tags: &[String], scenario: &str) -> Vec<String> {
        let mut out = Vec::new();
        if takes(&self.routes, unit, zone_tags, scenario) {
            out.push(self.primary_id().to_owned());
        }
        for t in &self.targets {
            if takes(&t.routes, unit, zone_tags, scenario) {
                out.push(t.id.clone());
            }
        }
        out
    }

    /// The settings one delivery task uses for each target, primary first: `id` is the
    /// target's, `url` its endpoint (`None` for a primary served by the embedded receiver,
    /// resolved by the caller), no further targets. Absent timing settings of a target take the
    /// `[dispatch]` values.
    pub fn per_target(&self) -> Vec<DispatchSettings> {
        let mut primary = self.clone();
        primary.id = Some(self.primary_id().to_owned());
        primary.targets.clear();
        let mut out = vec![primary];
        for t in &self.targets {
            out.push(DispatchSettings {
                id: Some(t.id.clone()),
                name: t.name.clone(),
                url: Some(t.url.clone()),
                bearer_token: t.bearer_token.clone(),
                timeout_seconds: t.timeout_seconds.unwrap_or(self.timeout_seconds),
                retry_initial_seconds: t
                    .retry_initial_seconds
                    .unwrap_or(self.retry_initial_seconds),
                retry_max_seconds: t.retry_max_seconds.unwrap_or(self.retry_max_seconds),
                embedded_receiver: None,
                breaker_failure_threshold: t
                    .breaker_failure_threshold
                    .unwrap_or(self.breaker_failure_threshold),
                breaker_open_seconds: t.breaker_open_seconds.unwrap_or(self.breaker_open_seconds),
                image_upload: t.image_upload,
                field_map: t.field_map.clone(),
                routes: t.routes.clone(),
                targets: Vec::new(),
            });
        }
        out
    }
}

/// Delivery timings longer than a day are typos, and `inf` would overflow the clock arithmetic.
pub const MAX_DISPATCH_SECONDS: f64 = 86_400.0;

/// Why a delivery timing is unusable, if it is.
pub fn out_of_bounds_seconds(v: f64) -> Option<String> {
    (!(v.is_finite() && v <= MAX_DISPATCH_SECONDS)).then(|| {
        format!("must be a finite number of seconds up to {MAX_DISPATCH_SECONDS}, got {v}")
    })
}

impl Config {
    /// Checks of `[dispatch]` routing and `[[dispatch.targets]]`; (field path, message) pairs.
    pub(super) fn validate_routing(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut err = |field: String, msg: String| out.push((field, msg));
        let mut ids = HashSet::new();
        ids.insert(self.dispatch.primary_id());
        // Cases stored before routing existed are deliveries to `primary`: only the
        // `[dispatch]` endpoint may carry that name, or they would go out with another
        // target's token.
        ids.insert(PRIMARY_TARGET_ID);
        if let Some(id) = &self.dispatch.id
            && id.trim().is_empty()
        {
            err("dispatch.id".into(), "id must not be empty".into());
        }
        self.check_routes(&self.dispatch.routes, "dispatch.routes", &mut err);
        for (i, t) in self.dispatch.targets.iter().enumerate() {
            let at = format!("dispatch.targets[{i}]");
            if t.id.trim().is_empty() {
                err(format!("{at}.id"), "id must not be empty".into());
            } else if t.id == PRIMARY_TARGET_ID {
                err(
                    format!("{at}.id"),
                    format!(
                        "`{PRIMARY_TARGET_ID}` is reserved for the `[dispatch]` endpoint (cases stored before routing are its deliveries)"
                    ),
                );
            } else if !ids.insert(t.id.as_str()) {
                err(
                    format!("{at}.id"),
                    format!(
                        "duplicate target id `{}` (the `[dispatch]` endpoint is `{}`)",
                        t.id,
                        self.dispatch.primary_id()
                    ),
                );
            }
            if let Err(e) = reqwest::Url::parse(&t.url) {
                err(format!("{at}.url"), format!("not a URL: {e}"));
            }
            if t.timeout_seconds.is_some_and(|s| s <= 0.0) {
                err(format!("{at}.timeout_seconds"), "must be positive".into());
            }
            for (field, v) in [
                ("timeout_seconds", t.timeout_seconds),
                ("retry_initial_seconds", t.retry_initial_seconds),
                ("retry_max_seconds", t.retry_max_seconds),
                ("breaker_open_seconds", t.breaker_open_seconds),
            ] {
                if let Some(msg) = v.and_then(out_of_bounds_seconds) {
                    err(format!("{at}.{field}"), msg);
                }
            }
            let initial = t
                .retry_initial_seconds
                .unwrap_or(self.dispatch.retry_initial_seconds);
            let max = t
                .retry_max_seconds
                .unwrap_or(self.dispatch.retry_max_seconds);
            if initial <= 0.0 || max < initial {
                err(
                    format!("{at}.retry_max_seconds"),
                    "need 0 < retry_initial_seconds <= retry_max_seconds".into(),
                );
            }
            if t.breaker_failure_threshold == Some(0)
                || t.breaker_open_seconds.is_some_and(|s| s <= 0.0)
            {
                err(
                    format!("{at}.breaker_failure_threshold"),
                    "need breaker_failure_threshold >= 1 and breaker_open_seconds > 0".into(),
                );
            }
            if let Err(e) = crate::dispatch::FieldMap::new(&t.field_map) {
                err(format!("{at}.field_map"), e.to_string());
            }
            self.check_routes(&t.routes, &format!("{at}.routes"), &mut err);
        }
        out
    }

    /// Unknown units and scenarios, empty lists, and rules no zone of any camera can satisfy.
    fn check_routes(&self, routes: &[Route], at: &str, err: &mut impl FnMut(String, String)) {
        for (j, r) in routes.iter().enumerate() {
            let at = format!("{at}[{j}]");
            let mut known = true;
            for (field, list) in [
                ("units", &r.units),
                ("zone_tags", &r.zone_tags),
                ("scenarios", &r.scenarios),
            ] {
                if list.as_ref().is_some_and(|l| l.is_empty()) {
                    err(
                        format!("{at}.{field}"),
                        "an empty list matches nothing; leave the field out to match any".into(),
                    );
                    known = false;
                }
            }
            for (k, u) in r.units.iter().flatten().enumerate() {
                if self.unit(u).is_none() {
                    err(
                        format!("{at}.units[{k}]"),
                        format!("unknown management unit `{u}`"),
                    );
                    known = false;
                }
            }
            for (k, s) in r.scenarios.iter().flatten().enumerate() {
                if !self.catalog.scenarios.is_empty() && self.catalog.entry(s).is_none() {
                    err(
                        format!("{at}.scenarios[{k}]"),
                        format!(
                            "unknown scenario `{s}` (known: {})",
                            self.catalog.ids().collect::<Vec<_>>().join(", ")
                        ),
                    );
                    known = false;
                }
            }
            // Only worth saying when each id is known: otherwise the line above says why.
            if known && !self.zone_scenarios().any(|(u, t, s)| r.matches(u, t, s)) {
                err(
                    at,
                    "this route can never match: no zone of any camera has this unit, tag and scenario together".into(),
                );
            }
        }
    }

    /// (unit, zone tags, scenario) of every scenario enabled in a zone.
    fn zone_scenarios(&self) -> impl Iterator<Item = (&str, &[String], &str)> {
        self.cameras.iter().flat_map(|c| {
            c.zones.iter().flat_map(move |z| {
                z.scenarios
                    .iter()
                    .map(move |s| (c.unit.as_str(), z.tags.as_slice(), s.as_str()))
            })
        })
    }

    /// Zones whose cases no target would take (a scenario enabled there that every target's
    /// routes leave out). Such cases are still stored; `gridwatch check` warns about them.
    pub fn unrouted(&self) -> Vec<String> {
        let mut out = Vec::new();
        for c in &self.cameras {
            for z in &c.zones {
                for s in &z.scenarios {
                    if self.dispatch.route(&c.unit, &z.tags, s).is_empty() {
                        out.push(format!(
                            "camera `{}` zone `{}` scenario `{s}`: no dispatch target takes these cases (they stay in the outbox as `unrouted`)",
                            c.id, z.id
                        ));
                    }
                }
            }
        }
        out
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
