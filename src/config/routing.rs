//! Routing rules against the key area: every unit and scenario a route names exists, and some
//! zone can match it; zones whose cases no target takes are listed for `gridwatch check`. The
//! rules themselves belong to the dispatch settings; the case stage applies them.

use super::Config;
use crate::cases::routing::Route;

impl Config {
    /// Checks the routes of `[dispatch]` and of every target against the key area.
    pub(super) fn validate_routes(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut err = |field: String, msg: String| out.push((field, msg));
        self.check_routes(&self.dispatch.routes, "dispatch.routes", &mut err);
        for (i, t) in self.dispatch.targets.iter().enumerate() {
            self.check_routes(
                &t.routes,
                &format!("dispatch.targets[{i}].routes"),
                &mut err,
            );
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
                if self.area.unit(u).is_none() {
                    err(
                        format!("{at}.units[{k}]"),
                        format!("unknown management unit `{u}`"),
                    );
                    known = false;
                }
            }
            if r.hours.as_ref().is_some_and(|l| l.is_empty())
                || r.phases.as_ref().is_some_and(|l| l.is_empty())
            {
                let field = if r.hours.as_ref().is_some_and(|l| l.is_empty()) {
                    "hours"
                } else {
                    "phases"
                };
                err(
                    format!("{at}.{field}"),
                    "an empty list matches nothing; leave the field out to match any".into(),
                );
            }
            for (k, p) in r.phases.iter().flatten().enumerate() {
                if self.area.plan_phase(p).is_none() {
                    err(
                        format!("{at}.phases[{k}]"),
                        format!(
                            "unknown phase `{p}` (the key area's [[phases]]: {})",
                            self.area
                                .phases
                                .iter()
                                .map(|p| p.id.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
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
        self.area.cameras.iter().flat_map(|c| {
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
        let routing = self.dispatch.routing();
        for c in &self.area.cameras {
            for z in &c.zones {
                for s in &z.scenarios {
                    if routing.route(&c.unit, &z.tags, s, None).is_empty() {
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
