//! What `gridwatch check` says about a valid configuration besides "ok": warnings (scenarios
//! that will not run, cases no target takes, models that provide nothing a zone asked for) and
//! notes (which models each camera runs, the fire baseline standing in, cluster mode).

use super::Config;
use crate::area::kinds::ObjectKind;

impl Config {
    /// The lines `check` prints before its verdict, each starting `warning:` or `note:`.
    pub fn check_report(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.report_inactive(&mut out);
        // Cases no dispatch target takes are stored but never sent.
        out.extend(
            self.unrouted()
                .into_iter()
                .map(|gap| format!("warning: {gap}")),
        );
        self.report_models(&mut out);
        self.report_rates(&mut out);
        self.report_int8(&mut out);
        self.report_fire_baseline(&mut out);
        self.report_platform_loop(&mut out);
        if let Some(dir) = &self.reports.dir {
            out.push(format!(
                "note: reports ({}) of the previous day{} are written to {} after {} local time",
                self.reports.formats.join(", "),
                if self.reports.weekly {
                    " and, on Mondays, of the previous week"
                } else {
                    ""
                },
                self.resolve(dir).display(),
                self.reports.daily_at
            ));
        }
        if let Some(cluster) = &self.cluster {
            out.push(format!(
                "note: cluster mode: the {} camera groups are divided among the nodes through etcd at {} (lease {} s; a lost node's groups move after it); each node needs its own --node-id",
                self.area.groups.len(),
                cluster.etcd_endpoints.join(", "),
                cluster.lease_ttl_seconds
            ));
        }
        out
    }

    /// The loop back from the platform: where statuses come from, the phase in force, where
    /// escalations go; a webhook secret without a status endpoint to receive it.
    fn report_platform_loop(&self, out: &mut Vec<String>) {
        for t in self.dispatch.per_target() {
            let id = t.primary_id().to_owned();
            let on_embedded = t.embedded_receiver.is_some() && t.url.is_none();
            let feed = t.status.as_ref().and_then(|s| s.feed_url.clone());
            let webhook = t
                .status
                .as_ref()
                .is_some_and(|s| s.webhook_secret.is_some());
            let how = match (feed, on_embedded, webhook) {
                (Some(f), _, w) => format!(
                    "polled from {f}{}",
                    if w { " and by signed webhook" } else { "" }
                ),
                (None, true, w) => format!(
                    "polled from the embedded receiver{}",
                    if w { " and by signed webhook" } else { "" }
                ),
                (None, false, true) => "by signed webhook".into(),
                (None, false, false) => {
                    out.push(format!("note: target `{id}` reports no case status back (no [dispatch.status]): no 视频核查 and no 103060 stop for its cases"));
                    continue;
                }
            };
            out.push(format!("note: target `{id}`: case statuses {how}"));
            if webhook && self.telemetry.metrics_listen.is_none() {
                out.push(format!("warning: target `{id}` has a webhook_secret but [telemetry] metrics_listen is not set: nothing receives its webhook"));
            }
        }
        let now = time::OffsetDateTime::now_utc();
        if let Some(p) = self.area.plan_phase_at(now) {
            out.push(format!(
                "note: the plan's phase in force now: {} ({})",
                p.name, p.id
            ));
        }
        match self.area.escalation_station() {
            Some(s) if self.cases.deadlines.escalate => {
                out.push(format!("note: cases past their 103060 deadline are escalated (督办) to {}", s.name));
            }
            None if self.cases.deadlines.escalate => out.push(
                "note: no station leads difficult problems ([[stations]] leads_difficult): escalations (督办) name none".into(),
            ),
            _ => {}
        }
    }

    /// Scenarios no configured model (nor the fire baseline) can serve: warnings, not errors;
    /// for each zone that enables one, whether a learned zone state serves it there or what it
    /// waits for.
    fn report_inactive(&self, out: &mut Vec<String>) {
        let Ok(kinds) = self.provided_kinds() else {
            return;
        };
        for i in self.catalog.inactive(&kinds) {
            let zones = self.zones_with(&i.id);
            let teach = if zones.is_empty() {
                "; or enable it in a zone and teach that zone's state (`gridwatch learn`)"
            } else {
                ""
            };
            out.push(format!(
                "warning: scenario `{}` inactive: {}{teach}",
                i.id, i.reason
            ));
            for (camera, zone) in zones {
                let served = self
                    .state_zones
                    .iter()
                    .any(|(c, z, s)| *c == camera && *z == zone && *s == i.id);
                out.push(if served {
                    format!(
                        "note: scenario `{}` runs in camera {camera} zone {zone} on its learned zone state ([states] cards_dir)",
                        i.id
                    )
                } else {
                    format!(
                        "warning: scenario `{}` in camera {camera} zone {zone} waits for a model with its kinds, or for a learned zone state: at least {} present and {} absent labelled frames of that zone (and {} of each among the latest), then `gridwatch learn`",
                        i.id,
                        crate::states::train::DEFAULT_MIN_LABELS_PER_CLASS,
                        crate::states::train::DEFAULT_MIN_LABELS_PER_CLASS,
                        crate::states::train::DEFAULT_MIN_HELD_OUT_PER_CLASS,
                    )
                });
            }
        }
        self.report_cards(out);
    }

    /// (camera, zone) of every zone that enables `scenario`.
    fn zones_with(&self, scenario: &str) -> Vec<(String, String)> {
        self.area
            .cameras
            .iter()
            .flat_map(|c| {
                c.zones
                    .iter()
                    .filter(|z| z.scenarios.iter().any(|s| s == scenario))
                    .map(|z| (c.id.clone(), z.id.clone()))
            })
            .collect()
    }

    /// Classifier cards that will not load against the models, or serve no zone.
    fn report_cards(&self, out: &mut Vec<String>) {
        let Some(dir) = self.states_dir() else {
            return;
        };
        let models: Vec<_> = self
            .models
            .iter()
            .filter_map(|m| {
                crate::infer::card::ModelCard::load(&self.resolve(m.chosen_card())).ok()
            })
            .map(std::sync::Arc::new)
            .collect();
        let (loaded, refused) = crate::states::scorer::load_cards(&dir, &models);
        for e in refused {
            out.push(format!("warning: {e}"));
        }
        for m in self.state_mismatches(&loaded) {
            out.push(format!("warning: {m}"));
        }
        for l in &loaded {
            out.push(format!(
                "note: learned zone state `{}` of camera {} zone {}: held-out precision {:.2}, recall {:.2} ({} present / {} absent labels), trained {}",
                l.card.state,
                l.card.camera,
                l.card.zone,
                l.card.held_out.precision,
                l.card.held_out.recall,
                l.card.labels.train_positive + l.card.labels.held_out_positive,
                l.card.labels.train_negative + l.card.labels.held_out_negative,
                l.card.trained_at.date()
            ));
        }
    }

    /// Which card each model with an INT8 variant runs on this machine, and why.
    fn report_int8(&self, out: &mut Vec<String>) {
        use crate::infer::settings::{Int8Choice, cpu_has_int8_dot_product};
        for m in self.models.iter().filter(|m| m.int8_card.is_some()) {
            let why = match (m.int8, cpu_has_int8_dot_product()) {
                (Int8Choice::Always, _) => "int8 = \"always\"",
                (Int8Choice::Never, _) => "int8 = \"never\"",
                (Int8Choice::Auto, true) => "this CPU has int8 dot-product instructions (VNNI)",
                (Int8Choice::Auto, false) => {
                    "this CPU lacks int8 dot-product instructions (VNNI), where INT8 may lose accuracy"
                }
            };
            out.push(format!(
                "note: model {} runs {} ({why})",
                m.resolved_id(),
                m.chosen_card().display()
            ));
        }
    }

    /// Each camera's analysis rate now and what sets it: its zones' needs (each zone due at its
    /// own rate) or its group's or phase's rate.
    fn report_rates(&self, out: &mut Vec<String>) {
        use crate::area::profile::RateSource;
        let now = time::OffsetDateTime::now_utc();
        for (i, camera) in self.area.cameras.iter().enumerate() {
            let profile = self.area.profile_at(i, now);
            let why = match profile.rate {
                RateSource::Zones => {
                    let zones: Vec<String> = camera
                        .zones
                        .iter()
                        .zip(self.area.zone_fps(i, &profile))
                        .map(|(z, fps)| format!("{} {fps}", z.id))
                        .collect();
                    format!("the highest need of its zones ({})", zones.join(", "))
                }
                RateSource::Override if camera.zones.is_empty() => {
                    "no zone (the wall's rate unless its group or phase sets one)".to_owned()
                }
                RateSource::Override => match &profile.phase {
                    Some(p) => format!("set by its group or phase {p}, every zone at it"),
                    None => "set by its group, every zone at it".to_owned(),
                },
            };
            let keyframes = match profile.keyframes_only {
                Some(true) => "keyframes only".to_owned(),
                Some(false) => "every frame decoded".to_owned(),
                None if self.ingest.skip_gop_tails => format!(
                    "keyframes only if its stream has a keyframe at least every {:.1} s, else each group of pictures only up to its last analysis slot (both measured while it runs)",
                    1.0 / profile.analysis_fps.max(crate::area::MIN_ANALYSIS_FPS)
                ),
                None => format!(
                    "keyframes only if its stream has a keyframe at least every {:.1} s (measured while it runs)",
                    1.0 / profile.analysis_fps.max(crate::area::MIN_ANALYSIS_FPS)
                ),
            };
            out.push(format!(
                "note: camera {} is analysed at {} fps, {why}; {keyframes}",
                camera.id, profile.analysis_fps
            ));
        }
    }

    /// With several models: what each camera runs, zones whose named models serve nothing,
    /// and models no camera runs.
    fn report_models(&self, out: &mut Vec<String>) {
        let Ok(kinds) = self.models_kinds() else {
            return;
        };
        let selections = self.camera_models(&kinds);
        let ids = self.model_ids();
        for (camera, sel) in self.area.cameras.iter().zip(&selections) {
            for u in &sel.unserved {
                out.push(format!("warning: camera {}: {u}", camera.id));
            }
            if ids.len() > 1 {
                out.push(format!(
                    "note: camera {} runs {}",
                    camera.id,
                    sel.plan.label()
                ));
            }
        }
        for (i, id) in ids.iter().enumerate().filter(|_| ids.len() > 1) {
            if !selections
                .iter()
                .any(|s| s.plan.models.iter().any(|u| u.index == i))
            {
                out.push(format!(
                    "warning: model `{id}` is configured but no camera runs it (no zone's scenario needs it or names it)"
                ));
            }
        }
    }

    fn report_fire_baseline(&self, out: &mut Vec<String>) {
        let Ok(model) = self.model_kinds() else {
            return;
        };
        if !crate::scenarios::fire_baseline_in_use(&self.scenarios.fire_baseline, &model) {
            return;
        }
        for s in self.catalog.scenarios.iter().filter(|s| {
            s.kinds
                .iter()
                .any(|k| matches!(k, ObjectKind::Fire | ObjectKind::Smoke))
        }) {
            out.push(format!(
                "note: scenario `{}` uses the classical OpenCV fire/smoke baseline: the models have no fire or smoke class ([scenarios.fire_baseline])",
                s.id
            ));
        }
    }
}
