//! Turning a model's raw outputs into detections: one `OutputDecoder` per output format, chosen
//! from the model card. Each decoder keeps its own scratch buffers across frames.

use std::sync::Arc;

use ort::session::SessionOutputs;

use super::card::{CardError, DecoderSpec, ModelCard};
use super::nanodet::{DecodeParams, Level, MAX_LEVELS, NanodetDecoder};
use super::ssd::{SsdDecoder, generate_anchors};
use super::yolo::{YoloDecoder, YoloFormat};
use super::{Detection, InferError};

/// What every decoder needs besides the outputs.
pub struct DecodeContext<'a> {
    pub model: &'a str,
    pub input_width: usize,
    pub input_height: usize,
    pub labels: &'a [Arc<str>],
    pub score_threshold: f32,
    pub nms_iou: f32,
}

impl DecodeContext<'_> {
    /// The named output as a flat f32 slice.
    pub fn tensor<'o>(
        &self,
        outputs: &'o SessionOutputs<'_>,
        name: &str,
    ) -> Result<&'o [f32], InferError> {
        self.tensor_with_shape(outputs, name).map(|(_, data)| data)
    }

    /// The named output's shape and data.
    pub fn tensor_with_shape<'o>(
        &self,
        outputs: &'o SessionOutputs<'_>,
        name: &str,
    ) -> Result<(&'o [i64], &'o [f32]), InferError> {
        let value = outputs
            .get(name)
            .ok_or_else(|| self.error(name, "missing"))?;
        value
            .try_extract_tensor::<f32>()
            .map(|(shape, data)| (&shape[..], data))
            .map_err(|e| self.error(name, &e.to_string()))
    }

    /// An error about the named output.
    pub fn error(&self, output: &str, message: &str) -> InferError {
        InferError::Run {
            model: self.model.to_owned(),
            message: format!("output `{output}`: {message}"),
        }
    }
}

pub trait OutputDecoder: Send {
    /// Decodes into `out` (cleared first); boxes normalised to 0..1 of the model input.
    fn decode(
        &mut self,
        outputs: &SessionOutputs<'_>,
        ctx: &DecodeContext<'_>,
        out: &mut Vec<Detection>,
    ) -> Result<(), InferError>;
}

/// The decoder the card asks for.
pub fn decoder_for(card: &ModelCard) -> Result<Box<dyn OutputDecoder>, InferError> {
    let kinds = card.class_kinds.clone();
    let (width, height) = card.input_size();
    Ok(match &card.decoder {
        DecoderSpec::Nanodet {
            strides,
            reg_max,
            score_outputs,
            box_outputs,
        } => {
            let levels = strides.len();
            if levels > MAX_LEVELS
                || score_outputs.len() != levels
                || box_outputs.len() != levels
                || strides.contains(&0)
            {
                return Err(invalid(card, "nanodet strides and outputs do not match"));
            }
            Box::new(Nanodet {
                strides: strides.clone(),
                reg_max: *reg_max,
                score_outputs: score_outputs.clone(),
                box_outputs: box_outputs.clone(),
                inner: NanodetDecoder::with_kinds(kinds),
            })
        }
        DecoderSpec::MediapipeSsd {
            boxes_output,
            scores_output,
            num_anchors,
            box_scale,
            anchors,
        } => {
            let anchors = generate_anchors(anchors, width, height)
                .map_err(|message| invalid(card, &message))?;
            if anchors.len() != *num_anchors {
                return Err(invalid(
                    card,
                    &format!(
                        "anchors generate {} anchors, num_anchors says {num_anchors}",
                        anchors.len()
                    ),
                ));
            }
            Box::new(Ssd {
                boxes_output: boxes_output.clone(),
                scores_output: scores_output.clone(),
                inner: SsdDecoder::new(anchors, *box_scale, kinds),
            })
        }
        DecoderSpec::Yolov5 { output } => Box::new(Yolo {
            output: output.clone(),
            inner: YoloDecoder::new(YoloFormat::V5, width, height, &[], kinds),
        }),
        DecoderSpec::Yolov8 { output } => Box::new(Yolo {
            output: output.clone(),
            inner: YoloDecoder::new(YoloFormat::V8, width, height, &[], kinds),
        }),
        DecoderSpec::Yolox {
            output,
            strides,
            decoded_in_graph,
        } => Box::new(Yolo {
            output: output.clone(),
            inner: YoloDecoder::new(
                YoloFormat::Yolox {
                    decoded_in_graph: *decoded_in_graph,
                },
                width,
                height,
                strides,
                kinds,
            ),
        }),
    })
}

fn invalid(card: &ModelCard, message: &str) -> InferError {
    InferError::Card(CardError::Invalid {
        card: card.path.clone(),
        message: format!("decoder `{}`: {message}", card.decoder.kind_name()),
    })
}

struct Nanodet {
    strides: Vec<u32>,
    reg_max: usize,
    score_outputs: Vec<String>,
    box_outputs: Vec<String>,
    inner: NanodetDecoder,
}

impl OutputDecoder for Nanodet {
    fn decode(
        &mut self,
        outputs: &SessionOutputs<'_>,
        ctx: &DecodeContext<'_>,
        out: &mut Vec<Detection>,
    ) -> Result<(), InferError> {
        // At most a handful of levels: a fixed array avoids a per-frame allocation.
        let n = self.strides.len().min(MAX_LEVELS);
        let mut levels: [Level<'_>; MAX_LEVELS] = std::array::from_fn(|_| Level {
            stride: 1,
            scores: &[],
            boxes: &[],
        });
        let classes = ctx.labels.len();
        let sides = 4 * (self.reg_max + 1);
        for (i, level) in levels.iter_mut().enumerate().take(n) {
            let stride = self.strides[i] as usize;
            let cells = ctx.input_width.div_ceil(stride) * ctx.input_height.div_ceil(stride);
            let scores = ctx.tensor(outputs, &self.score_outputs[i])?;
            let boxes = ctx.tensor(outputs, &self.box_outputs[i])?;
            if scores.len() != cells * classes || boxes.len() != cells * sides {
                return Err(ctx.error(
                    &self.score_outputs[i],
                    &format!(
                        "stride {stride}: expected {cells} cells × {classes} labels scores and × {sides} box logits, got {} and {} values",
                        scores.len(),
                        boxes.len()
                    ),
                ));
            }
            *level = Level {
                stride: self.strides[i],
                scores,
                boxes,
            };
        }
        let params = DecodeParams {
            input_width: ctx.input_width,
            input_height: ctx.input_height,
            num_classes: ctx.labels.len(),
            reg_max: self.reg_max,
            score_threshold: ctx.score_threshold,
            nms_iou: ctx.nms_iou,
        };
        self.inner.decode(&levels[..n], &params, ctx.labels, out);
        Ok(())
    }
}

struct Ssd {
    boxes_output: String,
    scores_output: String,
    inner: SsdDecoder,
}

impl OutputDecoder for Ssd {
    fn decode(
        &mut self,
        outputs: &SessionOutputs<'_>,
        ctx: &DecodeContext<'_>,
        out: &mut Vec<Detection>,
    ) -> Result<(), InferError> {
        let boxes = ctx.tensor(outputs, &self.boxes_output)?;
        let logits = ctx.tensor(outputs, &self.scores_output)?;
        self.inner
            .decode(
                boxes,
                logits,
                ctx.labels,
                ctx.score_threshold,
                ctx.nms_iou,
                out,
            )
            .map_err(|message| ctx.error(&self.scores_output, &message))
    }
}

struct Yolo {
    output: String,
    inner: YoloDecoder,
}

impl OutputDecoder for Yolo {
    fn decode(
        &mut self,
        outputs: &SessionOutputs<'_>,
        ctx: &DecodeContext<'_>,
        out: &mut Vec<Detection>,
    ) -> Result<(), InferError> {
        let (shape, data) = ctx.tensor_with_shape(outputs, &self.output)?;
        self.inner
            .decode(
                shape,
                data,
                ctx.labels,
                ctx.score_threshold,
                ctx.nms_iou,
                out,
            )
            .map_err(|message| ctx.error(&self.output, &message))
    }
}
