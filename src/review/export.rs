//! Training data from reviews: the reviewed cases' clean frames as a YOLO-format dataset
//! (`images/<id>.jpg`, `labels/<id>.txt` with `class cx cy w h` normalised, `data.yaml`).
//! Confirmed cases are positives (one box per object of the case, class = the scenario as
//! confirmed); rejected ones are hard negatives (empty label file). File names come only from
//! case ids parsed as UUIDs, never from request input, so nothing can be written outside the
//! dataset's folder.

use std::path::Path;

use uuid::Uuid;

use super::ReviewError;
use super::store::ReviewStore;
use crate::scenarios::catalog::Catalog;

/// One file of the dataset: its path inside the dataset and its bytes.
pub struct DatasetFile {
    pub path: String,
    pub bytes: Vec<u8>,
}

/// The whole dataset in memory (reviewed frames are a few hundred kilobytes each).
pub struct Dataset {
    pub files: Vec<DatasetFile>,
    pub positives: usize,
    pub negatives: usize,
}

/// The YOLO label line of a box [x1, y1, x2, y2] (normalised) for `class`.
pub fn label_line(class: usize, b: [f32; 4]) -> String {
    let (x1, y1) = (b[0].clamp(0.0, 1.0), b[1].clamp(0.0, 1.0));
    let (x2, y2) = (b[2].clamp(0.0, 1.0), b[3].clamp(0.0, 1.0));
    format!(
        "{class} {:.6} {:.6} {:.6} {:.6}",
        (x1 + x2) / 2.0,
        (y1 + y2) / 2.0,
        (x2 - x1).max(0.0),
        (y2 - y1).max(0.0)
    )
}

/// Builds the dataset; classes are the catalog's scenarios in catalog order. Blocking (reads
/// every reviewed frame through the store): the console calls it on the blocking pool.
pub fn build(store: &ReviewStore, catalog: &Catalog) -> Result<Dataset, ReviewError> {
    let names: Vec<&str> = catalog.ids().collect();
    let mut files = Vec::new();
    let (mut positives, mut negatives) = (0, 0);
    for r in store.reviewed()? {
        // The id is ours (UUIDv7), but parse it anyway: it becomes a file name.
        let Ok(id) = Uuid::parse_str(&r.id) else {
            continue;
        };
        let label = if r.confirmed {
            let Some(class) = names.iter().position(|n| *n == r.scenario) else {
                continue;
            };
            positives += 1;
            r.boxes
                .iter()
                .map(|b| label_line(class, *b) + "\n")
                .collect::<String>()
        } else {
            negatives += 1;
            String::new()
        };
        files.push(DatasetFile {
            path: format!("images/{id}.jpg"),
            bytes: r.clean_jpeg,
        });
        files.push(DatasetFile {
            path: format!("labels/{id}.txt"),
            bytes: label.into_bytes(),
        });
    }
    let mut yaml = String::from(
        "# gridwatch review export: confirmed cases are positives, rejected ones hard negatives.\npath: .\ntrain: images\nval: images\n",
    );
    yaml.push_str(&format!("nc: {}\nnames:\n", names.len()));
    for (i, n) in names.iter().enumerate() {
        yaml.push_str(&format!("  {i}: {n}\n"));
    }
    files.push(DatasetFile {
        path: "data.yaml".into(),
        bytes: yaml.into_bytes(),
    });
    Ok(Dataset {
        files,
        positives,
        negatives,
    })
}

impl Dataset {
    /// Writes the dataset under `dir` (created if needed).
    pub fn write_to(&self, dir: &Path) -> Result<(), ReviewError> {
        for sub in ["images", "labels"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        for f in &self.files {
            std::fs::write(dir.join(&f.path), &f.bytes)?;
        }
        Ok(())
    }

    /// The dataset as a tar archive under `gridwatch-dataset/`.
    pub fn to_tar(&self) -> Result<Vec<u8>, ReviewError> {
        let mut builder = tar::Builder::new(Vec::new());
        for f in &self.files {
            let mut header = tar::Header::new_gnu();
            header.set_size(f.bytes.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            );
            header.set_cksum();
            builder.append_data(
                &mut header,
                format!("gridwatch-dataset/{}", f.path),
                f.bytes.as_slice(),
            )?;
        }
        Ok(builder.into_inner()?)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn label_lines_are_centre_and_size() {
        assert_eq!(
            super::label_line(2, [0.1, 0.2, 0.5, 0.6]),
            "2 0.300000 0.400000 0.400000 0.400000"
        );
    }
}
