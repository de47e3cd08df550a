//! pprof: a gzipped `profile.proto`, for `go tool pprof`, Pyroscope, Parca and Grafana.
//!
//! Locations are already symbolized (functions, files, lines; inlined functions as several lines
//! of one location, innermost first), and each user location also sits in a mapping with the
//! module's path, GNU build id and file offset, so a tool may re-symbolize it from its own debug
//! files. A location's address is the one looked up: `address - 1` for return addresses, as
//! pprof expects ("a non-leaf address may be in the middle of a call instruction"). A frame
//! memtrace could not symbolize is a location with its address and no lines, in a mapping marked
//! unsymbolized, so Parca, Pyroscope or `pprof` with the module's debug file can do it. Labels are
//! `num_label`s (the process id and the capture's own, such as `oldest_age_ms`) and string
//! labels (`comm`, and `stack_end` for a truncated stack).
use std::collections::{HashMap, HashSet};
use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use prost::Message;

use super::pprof_proto as proto;
use crate::profile::symbolize::{Frame, FrameKind, Profile};

pub(super) fn write(profile: &Profile, out: &mut dyn Write) -> std::io::Result<()> {
    let encoded = build(profile).encode_to_vec();
    let mut gzip = GzEncoder::new(out, Compression::default());
    gzip.write_all(&encoded)?;
    gzip.finish()?;
    Ok(())
}

#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Self {
        let mut strings = Self::default();
        strings.get("");
        strings
    }

    fn get(&mut self, text: &str) -> i64 {
        if let Some(&index) = self.index.get(text) {
            return index;
        }
        let index = self.table.len() as i64;
        self.table.push(text.to_owned());
        self.index.insert(text.to_owned(), index);
        index
    }
}

/// A module mapped at one load bias (`address - file offset`).
#[derive(Clone, PartialEq, Eq, Hash)]
struct MappingKey {
    path: String,
    build_id: Option<String>,
    bias: u64,
}

/// A location is its address, mapping and lines (function id, line number).
type LocationKey = (u64, u64, Vec<(u64, i64)>);

#[derive(Default)]
struct Builder {
    strings: Strings,
    mappings: HashMap<MappingKey, proto::Mapping>,
    functions: HashMap<(String, String), u64>,
    function_list: Vec<proto::Function>,
    locations: HashMap<LocationKey, u64>,
    location_list: Vec<proto::Location>,
    /// Mappings with a location memtrace could not symbolize: a tool may, from its own debug
    /// files (pprof's `has_functions` false).
    unsymbolized_mappings: HashSet<u64>,
}

pub(super) fn build(profile: &Profile) -> proto::Profile {
    let mut builder = Builder {
        strings: Strings::new(),
        ..Builder::default()
    };
    let sample_type = profile
        .sample_types
        .iter()
        .map(|sample_type| proto::ValueType {
            r#type: builder.strings.get(sample_type.name),
            unit: builder.strings.get(sample_type.unit),
        })
        .collect();
    let default_sample_type = builder
        .strings
        .get(profile.sample_types[profile.default_sample_type].name);

    let mut samples = Vec::with_capacity(profile.stacks.len());
    for stack in &profile.stacks {
        // pprof's first location is the leaf: the kernel ran on top of the user leaf.
        let kernel: Vec<&Frame> = stack
            .frames
            .iter()
            .filter(|frame| frame.kind == FrameKind::Kernel)
            .collect();
        let user: Vec<&Frame> = stack
            .frames
            .iter()
            .filter(|frame| frame.kind == FrameKind::User)
            .collect();
        let mut location_id = builder.locations_of(&kernel);
        location_id.extend(builder.locations_of(&user));

        let mut label = vec![
            proto::Label {
                key: builder.strings.get("pid"),
                num: i64::from(stack.pid),
                ..proto::Label::default()
            },
            proto::Label {
                key: builder.strings.get("comm"),
                str: builder.strings.get(&stack.comm),
                ..proto::Label::default()
            },
        ];
        if stack.user_end.is_truncated() {
            label.push(proto::Label {
                key: builder.strings.get("stack_end"),
                str: builder.strings.get(stack.user_end.name()),
                ..proto::Label::default()
            });
        }
        for &(name, value) in &stack.labels {
            let unit = name
                .rsplit_once('_')
                .map(|(_, unit)| unit)
                .filter(|unit| matches!(*unit, "ms" | "ns" | "s" | "bytes"));
            label.push(proto::Label {
                key: builder.strings.get(name),
                num: value,
                num_unit: unit.map_or(0, |unit| {
                    builder.strings.get(match unit {
                        "ms" => "milliseconds",
                        "ns" => "nanoseconds",
                        "s" => "seconds",
                        other => other,
                    })
                }),
                ..proto::Label::default()
            });
        }
        samples.push(proto::Sample {
            location_id,
            value: stack.values.clone(),
            label,
        });
    }

    let stats = &profile.stats;
    let mut comments = vec![
        format!("memtrace profile: {}", profile.target),
        format!("sampling: {}", profile.sampling),
        format!(
            "samples: {}, truncated stacks: {}",
            stats.samples, stats.truncated_stacks
        ),
    ];
    comments.extend(
        stats
            .lost
            .iter()
            .filter(|(_, count)| *count > 0)
            .map(|(name, count)| format!("lost: {name} {count}")),
    );
    let comment = comments
        .iter()
        .map(|comment| builder.strings.get(comment))
        .collect();

    let mut mapping: Vec<proto::Mapping> = builder.mappings.into_values().collect();
    mapping.sort_by_key(|mapping| mapping.id);
    for mapping in &mut mapping {
        let symbolized = !builder.unsymbolized_mappings.contains(&mapping.id);
        mapping.has_functions = symbolized;
        mapping.has_filenames = symbolized;
        mapping.has_line_numbers = symbolized;
        mapping.has_inline_frames = symbolized;
    }
    proto::Profile {
        sample_type,
        sample: samples,
        mapping,
        location: builder.location_list,
        function: builder.function_list,
        string_table: builder.strings.table,
        time_nanos: i64::try_from(profile.started_unix_ms)
            .unwrap_or(i64::MAX)
            .saturating_mul(1_000_000),
        duration_nanos: i64::try_from(profile.duration_ms)
            .unwrap_or(i64::MAX)
            .saturating_mul(1_000_000),
        comment,
        default_sample_type,
        ..proto::Profile::default()
    }
}

impl Builder {
    /// Location ids of leaf-first `frames` of one kind: consecutive frames of one address (an
    /// inlined chain) are one location.
    fn locations_of(&mut self, frames: &[&Frame]) -> Vec<u64> {
        let leaf_address = frames.first().map(|frame| frame.address);
        let mut ids = Vec::new();
        let mut start = 0;
        while start < frames.len() {
            let address = frames[start].address;
            let end = frames[start..]
                .iter()
                .position(|frame| frame.address != address)
                .map_or(frames.len(), |offset| start + offset);
            let looked_up = if Some(address) == leaf_address && start == 0 {
                address
            } else {
                address.saturating_sub(1)
            };
            ids.push(self.location(looked_up, &frames[start..end]));
            start = end;
        }
        ids
    }

    fn location(&mut self, address: u64, frames: &[&Frame]) -> u64 {
        let mapping_id = self.mapping(address, frames[0]);
        let line: Vec<proto::Line> = frames
            .iter()
            .filter(|frame| frame.function.is_some())
            .map(|frame| proto::Line {
                function_id: self.function(frame),
                line: frame.line.map_or(0, i64::from),
            })
            .collect();
        let key = (
            address,
            mapping_id,
            line.iter()
                .map(|line| (line.function_id, line.line))
                .collect(),
        );
        if let Some(&id) = self.locations.get(&key) {
            return id;
        }
        if line.is_empty() && mapping_id != 0 {
            self.unsymbolized_mappings.insert(mapping_id);
        }
        let id = self.location_list.len() as u64 + 1;
        self.location_list.push(proto::Location {
            id,
            mapping_id,
            address,
            line,
            is_folded: false,
        });
        self.locations.insert(key, id);
        id
    }

    fn function(&mut self, frame: &Frame) -> u64 {
        let name = frame.display_name();
        let file = frame.file.clone().unwrap_or_default();
        if let Some(&id) = self.functions.get(&(name.clone(), file.clone())) {
            return id;
        }
        let id = self.function_list.len() as u64 + 1;
        let name_index = self.strings.get(&name);
        self.function_list.push(proto::Function {
            id,
            name: name_index,
            system_name: name_index,
            filename: self.strings.get(&file),
            start_line: 0,
        });
        self.functions.insert((name, file), id);
        id
    }

    /// The mapping of a user frame with a known module and offset; 0 (none) otherwise.
    fn mapping(&mut self, address: u64, frame: &Frame) -> u64 {
        let (Some(path), Some(file_offset)) = (&frame.module, frame.file_offset) else {
            return 0;
        };
        let key = MappingKey {
            path: path.clone(),
            build_id: frame.build_id.clone(),
            bias: address.wrapping_sub(file_offset),
        };
        let next_id = self.mappings.len() as u64 + 1;
        let filename = self.strings.get(path);
        let build_id = self.strings.get(frame.build_id.as_deref().unwrap_or(""));
        let mapping = self.mappings.entry(key).or_insert_with(|| proto::Mapping {
            id: next_id,
            memory_start: address,
            memory_limit: address + 1,
            file_offset,
            filename,
            build_id,
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
            has_inline_frames: true,
        });
        if address < mapping.memory_start {
            mapping.memory_start = address;
            mapping.file_offset = file_offset;
        }
        mapping.memory_limit = mapping.memory_limit.max(address + 1);
        mapping.id
    }
}
