//! Fragmented MP4 for the wall's live video: the init segment (`ftyp` + `moov`) of an H.264
//! track from its caps, and one `moof` + `mdat` header per access unit, so that the browser's
//! Media Source Extensions can play the camera's own bitstream without any re-encoding. The
//! boxes are written by `mp4-atom`; the payload stays the GStreamer buffer (see [`Fragment`]).

use bytes::Bytes;
use gstreamer as gst;
use mp4_atom::{
    Atom, Avc1, Avcc, Dinf, Dref, Encode, FourCC, Ftyp, Hdlr, Matrix, Mdhd, Mdia, Mfhd, Minf, Moof,
    Moov, Mvex, Mvhd, Stbl, Stco, Stsc, Stsd, Stsz, Stts, Tfdt, Tfhd, Tkhd, Traf, Trak, Trex, Trun,
    TrunEntry, TrunSamples, Url, Visual, Vmhd,
};

/// Ticks per second of the track's media time.
pub const TIMESCALE: u32 = 90_000;
/// The one track's id.
const TRACK_ID: u32 = 1;
/// `sample_flags` of a sync sample (depends on no other) and of a delta unit (depends on
/// others, not a sync sample): ISO/IEC 14496-12 §8.8.3.1.
const SYNC_SAMPLE_FLAGS: u32 = 0x0200_0000;
const DELTA_SAMPLE_FLAGS: u32 = 0x0101_0000;

#[derive(Debug, thiserror::Error)]
pub enum Fmp4Error {
    #[error("not H.264 in `avc` form with access units (caps {0})")]
    NotAvc(String),
    #[error("H.264 caps without width, height or codec_data")]
    Incomplete,
    #[error("the stream's avcC (codec_data) cannot be read: {0}")]
    Avcc(String),
    #[error("cannot write the MP4 boxes: {0}")]
    Encode(String),
}

/// The H.264 track of one camera's stream, from its caps.
#[derive(Debug, Clone)]
pub struct Track {
    width: u16,
    height: u16,
    avcc: Avcc,
}

impl Track {
    /// The track of `video/x-h264, stream-format=avc, alignment=au` caps.
    pub fn from_caps(caps: &gst::CapsRef) -> Result<Self, Fmp4Error> {
        let s = caps
            .structure(0)
            .ok_or_else(|| Fmp4Error::NotAvc(caps.to_string()))?;
        let avc = s.name() == "video/x-h264"
            && s.get::<&str>("stream-format").ok() == Some("avc")
            && s.get::<&str>("alignment").ok() == Some("au");
        if !avc {
            return Err(Fmp4Error::NotAvc(caps.to_string()));
        }
        let (Ok(width), Ok(height), Ok(codec_data)) = (
            s.get::<i32>("width"),
            s.get::<i32>("height"),
            s.get::<gst::Buffer>("codec_data"),
        ) else {
            return Err(Fmp4Error::Incomplete);
        };
        let map = codec_data
            .map_readable()
            .map_err(|_| Fmp4Error::Incomplete)?;
        let mut body = map.as_slice();
        let avcc = Avcc::decode_body(&mut body).map_err(|e| Fmp4Error::Avcc(e.to_string()))?;
        Ok(Self {
            width: u16::try_from(width).map_err(|_| Fmp4Error::Incomplete)?,
            height: u16::try_from(height).map_err(|_| Fmp4Error::Incomplete)?,
            avcc,
        })
    }

    pub fn width(&self) -> u16 {
        self.width
    }

    pub fn height(&self) -> u16 {
        self.height
    }

    /// The MIME type `MediaSource.isTypeSupported` and `addSourceBuffer` take (RFC 6381).
    pub fn mime(&self) -> String {
        format!(
            "video/mp4; codecs=\"avc1.{:02x}{:02x}{:02x}\"",
            self.avcc.avc_profile_indication,
            self.avcc.profile_compatibility,
            self.avcc.avc_level_indication
        )
    }

    /// `ftyp` + `moov` with one video track and no samples (they come in fragments).
    pub fn init_segment(&self) -> Result<Bytes, Fmp4Error> {
        let identity = Matrix {
            a: 0x0001_0000,
            b: 0,
            u: 0,
            c: 0,
            d: 0x0001_0000,
            v: 0,
            x: 0,
            y: 0,
            w: 0x4000_0000,
        };
        let ftyp = Ftyp {
            major_brand: FourCC::new(b"iso6"),
            minor_version: 0,
            compatible_brands: vec![
                FourCC::new(b"iso6"),
                FourCC::new(b"cmfc"),
                FourCC::new(b"mp41"),
            ],
        };
        let codec = Avc1 {
            visual: Visual {
                data_reference_index: 1,
                width: self.width,
                height: self.height,
                ..Visual::default()
            },
            avcc: self.avcc.clone(),
            btrt: None,
            colr: None,
            pasp: None,
            taic: None,
            fiel: None,
            spatial: None,
        };
        let moov = Moov {
            mvhd: Mvhd {
                timescale: TIMESCALE,
                rate: 1.into(),
                volume: 1.into(),
                matrix: identity.clone(),
                next_track_id: TRACK_ID + 1,
                ..Mvhd::default()
            },
            mvex: Some(Mvex {
                mehd: None,
                trex: vec![Trex {
                    track_id: TRACK_ID,
                    default_sample_description_index: 1,
                    default_sample_duration: 0,
                    default_sample_size: 0,
                    default_sample_flags: 0,
                }],
            }),
            trak: vec![Trak {
                tkhd: Tkhd {
                    track_id: TRACK_ID,
                    enabled: true,
                    in_movie: true,
                    matrix: identity,
                    width: self.width.into(),
                    height: self.height.into(),
                    ..Tkhd::default()
                },
                mdia: Mdia {
                    mdhd: Mdhd {
                        timescale: TIMESCALE,
                        language: "und".into(),
                        ..Mdhd::default()
                    },
                    hdlr: Hdlr {
                        handler: FourCC::new(b"vide"),
                        name: "gridwatch live".into(),
                    },
                    minf: Minf {
                        vmhd: Some(Vmhd::default()),
                        dinf: Dinf {
                            dref: Dref {
                                entries: vec![Url::default().into()],
                            },
                        },
                        stbl: Stbl {
                            stsd: Stsd {
                                codecs: vec![codec.into()],
                            },
                            stts: Stts::default(),
                            stsc: Stsc::default(),
                            stsz: Stsz::default(),
                            stco: Some(Stco::default()),
                            ..Stbl::default()
                        },
                        ..Minf::default()
                    },
                },
                ..Trak::default()
            }],
            ..Moov::default()
        };
        let mut out = Vec::with_capacity(1024);
        ftyp.encode(&mut out).map_err(encode_err)?;
        moov.encode(&mut out).map_err(encode_err)?;
        Ok(Bytes::from(out))
    }
}

fn encode_err(e: mp4_atom::Error) -> Fmp4Error {
    Fmp4Error::Encode(e.to_string())
}

/// One access unit's timing, in [`TIMESCALE`] ticks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Fragment sequence number (1, 2, …).
    pub sequence: u32,
    pub decode_ticks: u64,
    pub duration_ticks: u32,
    /// Presentation minus decode time (B-frames).
    pub composition_offset_ticks: i64,
    pub size: u32,
    pub keyframe: bool,
}

/// The `moof` of one sample followed by its `mdat` header: the payload follows as is.
pub fn fragment_header(sample: &Sample) -> Result<Bytes, Fmp4Error> {
    let mut moof = Moof {
        mfhd: Mfhd {
            sequence_number: sample.sequence,
        },
        traf: vec![Traf {
            tfhd: Tfhd {
                track_id: TRACK_ID,
                default_base_is_moof: true,
                ..Tfhd::default()
            },
            tfdt: Some(Tfdt {
                base_media_decode_time: sample.decode_ticks,
            }),
            trun: vec![Trun {
                data_offset: Some(0),
                samples: TrunSamples::Explicit(vec![TrunEntry {
                    duration: Some(sample.duration_ticks),
                    size: Some(sample.size),
                    flags: Some(if sample.keyframe {
                        SYNC_SAMPLE_FLAGS
                    } else {
                        DELTA_SAMPLE_FLAGS
                    }),
                    cts: Some(sample.composition_offset_ticks),
                }]),
            }],
            ..Traf::default()
        }],
    };
    let mut out = Vec::with_capacity(128);
    moof.encode(&mut out).map_err(encode_err)?;
    // The payload starts after the moof and the 8-byte mdat header; the offset does not change
    // the moof's size, so the second encoding has the same length.
    let offset = i32::try_from(out.len() + 8).map_err(|e| Fmp4Error::Encode(e.to_string()))?;
    moof.traf[0].trun[0].data_offset = Some(offset);
    out.clear();
    moof.encode(&mut out).map_err(encode_err)?;
    let mdat_size = sample
        .size
        .checked_add(8)
        .ok_or_else(|| Fmp4Error::Encode("access unit over 4 GiB".into()))?;
    out.extend_from_slice(&mdat_size.to_be_bytes());
    out.extend_from_slice(b"mdat");
    Ok(Bytes::from(out))
}
