//! Scoring one frame: pool the feature map over the zone (mask precomputed), standardise, dot
//! with the weights, sigmoid. The pooled vector lives in a scratch buffer the classifier owns.

use super::StatesError;
use super::card::ClassifierCard;
use super::pool::ZoneMask;
use crate::infer::FeatureMap;

/// A loaded classifier card, ready to score frames of its camera.
#[derive(Debug, Clone)]
pub struct ZoneClassifier {
    card: ClassifierCard,
    mask: ZoneMask,
    scratch: Vec<f32>,
}

impl ZoneClassifier {
    /// Precomputes the zone's cell mask on the card's grid and the scratch buffer.
    pub fn new(card: ClassifierCard) -> Self {
        let f = &card.features;
        let mask = ZoneMask::new(&card.polygon, card.pooling, f.grid_width, f.grid_height);
        let scratch = Vec::with_capacity(card.pooling.dims(f.channels));
        Self {
            card,
            mask,
            scratch,
        }
    }

    pub fn card(&self) -> &ClassifierCard {
        &self.card
    }

    /// The probability (0..1) that the card's state holds in this frame. Allocation-free.
    pub fn score(&mut self, map: &FeatureMap<'_>) -> Result<f32, StatesError> {
        let f = &self.card.features;
        if (map.width, map.height, map.channels) != (f.grid_width, f.grid_height, f.channels) {
            return Err(StatesError::MapSize {
                got_w: map.width,
                got_h: map.height,
                got_c: map.channels,
                want_w: f.grid_width,
                want_h: f.grid_height,
                want_c: f.channels,
            });
        }
        self.mask.pool(map, &mut self.scratch);
        Ok(probability(&self.card.linear, &self.scratch))
    }

    /// Whether the state holds: [`ZoneClassifier::score`] at or above the card's threshold.
    pub fn is_present(&mut self, map: &FeatureMap<'_>) -> Result<bool, StatesError> {
        Ok(self.score(map)? >= self.card.linear.threshold)
    }
}

/// sigmoid(Σ wᵢ (xᵢ − meanᵢ) / stdᵢ + bias) of a pooled vector.
pub fn probability(linear: &super::card::Linear, pooled: &[f32]) -> f32 {
    let z = pooled
        .iter()
        .zip(&linear.mean)
        .zip(&linear.std)
        .zip(&linear.weights)
        .fold(linear.bias, |acc, (((x, m), s), w)| acc + w * (x - m) / s);
    1.0 / (1.0 + (-z).exp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::states::card::{FeatureSource, HeldOut, LabelCounts, Linear};
    use crate::states::pool::Pooling;

    fn classifier() -> ZoneClassifier {
        ZoneClassifier::new(ClassifierCard {
            camera: "cam".into(),
            zone: "z".into(),
            state: "s".into(),
            polygon: vec![[0.5, 0.5], [1.0, 0.5], [1.0, 1.0], [0.5, 1.0]],
            trained_at: time::OffsetDateTime::UNIX_EPOCH,
            features: FeatureSource {
                model: "m".into(),
                sha256: "ab".into(),
                output: "f".into(),
                grid_width: 2,
                grid_height: 2,
                channels: 1,
            },
            pooling: Pooling::ZoneMean,
            linear: Linear {
                mean: vec![1.0],
                std: vec![2.0],
                weights: vec![4.0],
                bias: -1.0,
                threshold: 0.5,
            },
            labels: LabelCounts {
                train_positive: 5,
                train_negative: 5,
                held_out_positive: 3,
                held_out_negative: 3,
            },
            held_out: HeldOut {
                precision: 1.0,
                recall: 1.0,
            },
        })
    }

    #[test]
    fn score_standardises_the_zone_mean_and_refuses_another_grid() {
        let mut c = classifier();
        // Only the bottom-right cell is in the zone: x = 3 → z = 4 × (3 − 1) / 2 − 1 = 3.
        let data = [9.0, 9.0, 9.0, 3.0];
        let map = FeatureMap::new(2, 2, 1, &data).unwrap();
        let p = c.score(&map).unwrap();
        assert!((p - 1.0 / (1.0 + (-3.0f32).exp())).abs() < 1e-6, "{p}");
        assert!(c.is_present(&map).unwrap());
        let before = c.scratch.as_ptr();
        c.score(&map).unwrap();
        assert_eq!(c.scratch.as_ptr(), before, "no reallocation per frame");
        let other = [0.0; 9];
        let wrong = FeatureMap::new(3, 3, 1, &other).unwrap();
        assert!(matches!(c.score(&wrong), Err(StatesError::MapSize { .. })));
    }
}
