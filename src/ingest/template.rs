//! gst-launch pipeline templates with `{placeholder}`s, checked when loaded so that a typo in a
//! template is a configuration error, not a camera that never starts.

/// The placeholders a template may use.
pub const PLACEHOLDERS: &[&str] = &["uri", "location", "fps", "width", "height", "sync"];

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

    pub fn render(
        &self,
        uri: &str,
        location: &str,
        fps: f64,
        width: usize,
        height: usize,
        sync: bool,
    ) -> Result<String, TemplateError> {
        let (num, den) = fraction(fps)
            .ok_or_else(|| TemplateError::Render(format!("invalid analysis rate {fps}")))?;
        Ok(self
            .body
            .replace("{uri}", &escape(uri))
            .replace("{location}", &escape(location))
            .replace("{fps}", &format!("{num}/{den}"))
            .replace("{width}", &width.to_string())
            .replace("{height}", &height.to_string())
            .replace("{sync}", if sync { "true" } else { "false" }))
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
    fn renders_known_placeholders_and_refuses_unknown_ones() {
        let t = PipelineTemplate::parse("# c\nfilesrc location=\"{location}\" ! x framerate={fps} w={width} h={height} sync={sync}").unwrap();
        let s = t.render("", "/a \"b\"", 0.5, 416, 320, false).unwrap();
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
