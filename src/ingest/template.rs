//! gst-launch pipeline templates with `{placeholder}`s, checked when loaded so that a typo in a
//! template is a configuration error, not a camera that never starts.

/// The placeholders a template may use.
pub const PLACEHOLDERS: &[&str] = &[
    "uri",
    "location",
    "fps",
    "width",
    "height",
    "sync",
    "decode",
    "decoder",
    "protocols",
    "timeout_us",
    "user",
    "password",
];

/// Values for one rendering of a template.
#[derive(Debug, Clone, Default)]
pub struct TemplateValues<'a> {
    pub uri: &'a str,
    pub location: &'a str,
    pub fps: f64,
    pub width: usize,
    pub height: usize,
    pub sync: bool,
    /// The decoding part of the pipeline (`decodebin`, …).
    pub decode: &'a str,
    /// The decoder after a parser (`decodebin`, or the configured element).
    pub decoder: &'a str,
    pub protocols: &'a str,
    pub timeout_us: u64,
    pub user: &'a str,
    pub password: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("pipeline template: unknown placeholder `{{{0}}}` (known: {known})", known = PLACEHOLDERS.join(", "))]
    UnknownPlaceholder(String),
    #[error("pipeline template: unclosed `{{`")]
    Unclosed,
    #[error("pipeline template: {0}")]
    Render(String),
}

/// A template with comment lines (`#`) removed.
pub struct PipelineTemplate {
    body: String,
}

impl PipelineTemplate {
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let body = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join(" ");
        let mut rest = body.as_str();
        while let Some(open) = rest.find('{') {
            let close = rest[open..].find('}').ok_or(TemplateError::Unclosed)? + open;
            let name = &rest[open + 1..close];
            if !PLACEHOLDERS.contains(&name) {
                return Err(TemplateError::UnknownPlaceholder(name.to_owned()));
            }
            rest = &rest[close + 1..];
        }
        Ok(Self {
            body: body.trim().to_owned(),
        })
    }

    pub fn render(&self, v: &TemplateValues<'_>) -> Result<String, TemplateError> {
        let (num, den) = fraction(v.fps)
            .ok_or_else(|| TemplateError::Render(format!("invalid analysis rate {}", v.fps)))?;
        // An empty decoder would leave `! !` in the description: say which value is missing
        // rather than let GStreamer report a syntax error.
        for (name, value) in [("decode", v.decode), ("decoder", v.decoder)] {
            if value.is_empty() && self.body.contains(&format!("{{{name}}}")) {
                return Err(TemplateError::Render(format!("no value for {{{name}}}")));
            }
        }
        Ok(self
            .body
            .replace("{uri}", &escape(v.uri))
            .replace("{location}", &escape(v.location))
            .replace("{fps}", &format!("{num}/{den}"))
            .replace("{width}", &v.width.to_string())
            .replace("{height}", &v.height.to_string())
            .replace("{sync}", if v.sync { "true" } else { "false" })
            .replace("{decoder}", v.decoder)
            .replace("{decode}", v.decode)
            .replace("{protocols}", v.protocols)
            .replace("{timeout_us}", &v.timeout_us.to_string())
            .replace("{user}", &escape(v.user))
            .replace("{password}", &escape(v.password)))
    }
}

/// Escapes a value placed inside double quotes in a gst-launch description.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A frame rate as a reduced fraction with a denominator of at most 1000.
fn fraction(fps: f64) -> Option<(u64, u64)> {
    if !(fps.is_finite() && fps > 0.0) {
        return None;
    }
    let den = 1000u64;
    let num = (fps * den as f64).round() as u64;
    let g = gcd(num, den);
    (num > 0).then(|| (num / g, den / g))
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decoder_placeholder_without_a_value_is_refused_by_name() {
        let t = PipelineTemplate::parse("filesrc ! parsebin ! {decoder} ! fakesink").unwrap();
        let v = TemplateValues {
            fps: 1.0,
            ..Default::default()
        };
        assert!(matches!(t.render(&v), Err(TemplateError::Render(m)) if m.contains("{decoder}")));
        let v = TemplateValues {
            decoder: "decodebin",
            ..v
        };
        assert!(
            t.render(&v)
                .unwrap()
                .contains("parsebin ! decodebin ! fakesink")
        );
    }

    #[test]
    fn renders_known_placeholders_and_refuses_unknown_ones() {
        let t = PipelineTemplate::parse("# c\nfilesrc location=\"{location}\" ! x framerate={fps} w={width} h={height} sync={sync}").unwrap();
        let v = TemplateValues {
            location: "/a \"b\"",
            fps: 0.5,
            width: 416,
            height: 320,
            ..Default::default()
        };
        let s = t.render(&v).unwrap();
        assert_eq!(
            s,
            "filesrc location=\"/a \\\"b\\\"\" ! x framerate=1/2 w=416 h=320 sync=false"
        );
        assert!(
            matches!(PipelineTemplate::parse("x {nope}"), Err(TemplateError::UnknownPlaceholder(n)) if n == "nope")
        );
        assert!(matches!(
            PipelineTemplate::parse("x {uri"),
            Err(TemplateError::Unclosed)
        ));
    }
}
