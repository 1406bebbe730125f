//! Zone geometry in normalised frame coordinates: polygon validation and point-in-polygon.

/// A zone polygon must have at least 3 vertices inside the frame and enclose an area.
pub fn validate_polygon(points: &[[f64; 2]]) -> Result<(), String> {
    if points.len() < 3 {
        return Err(format!(
            "a zone polygon needs at least 3 points, got {}",
            points.len()
        ));
    }
    if let Some(p) = points
        .iter()
        .find(|p| !(0.0..=1.0).contains(&p[0]) || !(0.0..=1.0).contains(&p[1]))
    {
        return Err(format!(
            "point [{}, {}] is outside the frame (coordinates are normalised to 0..1)",
            p[0], p[1]
        ));
    }
    if area(points) < 1e-6 {
        return Err("the polygon encloses no area (points are collinear or repeated)".into());
    }
    Ok(())
}

/// Absolute area by the shoelace formula.
pub fn area(points: &[[f64; 2]]) -> f64 {
    let n = points.len();
    (0..n)
        .map(|i| {
            let (a, b) = (points[i], points[(i + 1) % n]);
            a[0] * b[1] - b[0] * a[1]
        })
        .sum::<f64>()
        .abs()
        / 2.0
}

/// Even-odd rule; points on the boundary may fall either way.
pub fn contains(polygon: &[[f64; 2]], p: [f64; 2]) -> bool {
    let mut inside = false;
    let n = polygon.len();
    let mut j = n.wrapping_sub(1);
    for i in 0..n {
        let (a, b) = (polygon[i], polygon[j]);
        if (a[1] > p[1]) != (b[1] > p[1])
            && p[0] < (b[0] - a[0]) * (p[1] - a[1]) / (b[1] - a[1]) + a[0]
        {
            inside = !inside;
        }
        j = i;
    }
    inside
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containment_and_validation() {
        let tri = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]];
        assert!(contains(&tri, [0.2, 0.2]));
        assert!(!contains(&tri, [0.8, 0.8]));
        assert!(validate_polygon(&tri).is_ok());
        assert!(validate_polygon(&tri[..2]).is_err());
        assert!(validate_polygon(&[[0.0, 0.0], [0.5, 0.5], [1.0, 1.0]]).is_err());
        assert!(validate_polygon(&[[0.0, 0.0], [1.5, 0.0], [0.0, 1.0]]).is_err());
    }
}
