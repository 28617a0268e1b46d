//! Every kernel variant the launchers can build ([`every_kernel_spec`]), compiled by naga
//! for each backend wgpu writes shaders for: SPIR-V 1.3 (Vulkan), MSL 2.4 (Metal) and HLSL
//! shader model 6.0 (DX12). wgpu compiles a variant only when a launcher first asks for it,
//! and only for the adapter at hand, so a variant that one backend's writer refuses would
//! otherwise surface only on that platform, in a user's run.
//!
//! Also here: the variants a representative run builds are all listed, every entry point
//! of every module is some listed variant's, and the list as the WGSL each variant is,
//! written for a check with Tint (Chrome's WGSL compiler) to `target/pipeline-variants.json`
//! or to `$SHADERGRAD_VARIANTS_OUT`.

mod conformance;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use naga::back::{hlsl, msl, spv};
use naga::valid::{
    Capabilities, ModuleInfo, ShaderStages, SubgroupOperationSet, ValidationFlags, Validator,
};
use serde_json::Value;
use shadergrad::bench::{self, BenchOptions};
use shadergrad::data::text::{bucketed_batches, Bucketing, Pair};
use shadergrad::data::tokens::{PairVocab, PairVocabSpec};
use shadergrad::gpu::Autotune;
use shadergrad::gpu::{Access, KernelSpec, ShaderSource};
use shadergrad::kernels::matmul::COOP_SHADER;
use shadergrad::kernels::{every_kernel_spec, variants_for_other_compilers, SHADERS};
use shadergrad::models::seq2seq::{dropout_seed, Seq2SeqModel};
use shadergrad::nn::seq2seq::{Architecture, Seq2SeqConfig};
use shadergrad::nn::transformer::TransformerConfig;
use shadergrad::optim::{OptimizerConfig, Rule};
use shadergrad::Gpu;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Backend {
    SpirV,
    Msl,
    Hlsl,
}

impl Backend {
    const ALL: [Backend; 3] = [Backend::SpirV, Backend::Msl, Backend::Hlsl];

    fn name(self) -> &'static str {
        match self {
            Backend::SpirV => "SPIR-V 1.3",
            Backend::Msl => "MSL 2.4",
            Backend::Hlsl => "HLSL 6.0",
        }
    }

    /// What naga's writer for this backend supports, which the module is validated against.
    fn capabilities(self) -> Capabilities {
        match self {
            Backend::SpirV => spv::supported_capabilities(),
            Backend::Msl => msl::supported_capabilities(),
            Backend::Hlsl => hlsl::supported_capabilities(),
        }
    }

    /// Writes the entry point of `spec` from `module`, whose overrides are applied. Each
    /// binding of the spec gets its own slot, as wgpu's layouts give them; a binding the
    /// shader uses that the spec lacks is an error.
    fn write(
        self,
        module: &naga::Module,
        info: &ModuleInfo,
        spec: &KernelSpec,
    ) -> Result<(), String> {
        let stage = naga::ShaderStage::Compute;
        let binding = |i: usize| naga::ResourceBinding {
            group: 0,
            binding: i as u32,
        };
        match self {
            Backend::SpirV => {
                let options = spv::Options {
                    // Vulkan 1.1's version, the first with subgroup operations.
                    lang_version: (1, 3),
                    ..spv::Options::default()
                };
                let pipeline = spv::PipelineOptions {
                    shader_stage: stage,
                    entry_point: spec.entry.to_string(),
                };
                spv::write_vec(module, info, &options, Some(&pipeline))
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
            Backend::Msl => {
                let resources = spec
                    .bindings
                    .iter()
                    .enumerate()
                    .map(|(i, access)| {
                        let target = msl::BindTarget {
                            buffer: Some(i as msl::Slot),
                            mutable: *access == Access::ReadWrite,
                            ..msl::BindTarget::default()
                        };
                        (binding(i), target)
                    })
                    .collect();
                let entry_point = msl::EntryPointResources {
                    resources,
                    immediates_buffer: None,
                    // The lengths of runtime-sized arrays, after the bindings.
                    sizes_buffer: Some(spec.bindings.len() as msl::Slot),
                };
                let options = msl::Options {
                    lang_version: (2, 4),
                    per_entry_point_map: BTreeMap::from([(spec.entry.to_string(), entry_point)]),
                    fake_missing_bindings: false,
                    ..msl::Options::default()
                };
                let pipeline = msl::PipelineOptions {
                    entry_point: Some((stage, spec.entry.to_string())),
                    ..msl::PipelineOptions::default()
                };
                msl::write_string(module, info, &options, &pipeline)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
            Backend::Hlsl => {
                let binding_map = (0..spec.bindings.len())
                    .map(|i| {
                        let target = hlsl::BindTarget {
                            register: i as u32,
                            ..hlsl::BindTarget::default()
                        };
                        (binding(i), target)
                    })
                    .collect();
                let options = hlsl::Options {
                    shader_model: hlsl::ShaderModel::V6_0,
                    binding_map,
                    fake_missing_bindings: false,
                    ..hlsl::Options::default()
                };
                let pipeline = hlsl::PipelineOptions {
                    entry_point: Some((stage, spec.entry.to_string())),
                };
                let mut out = String::new();
                hlsl::Writer::new(&mut out, &options, &pipeline)
                    .write(module, info, None)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// The backends a module cannot run on, and why: only the cooperative-matrix matmul's,
/// which its launcher runs only where an adapter offers 16×16 f16 matrices. Its variants
/// must still validate and write SPIR-V; the others are tried and their outcome shown.
/// (wgpu's GL backend, which this test does not write for, would refuse it too: naga's
/// GLSL has no f16.)
const EXCLUDED: &[(&str, Backend, &str)] = &[
    (
        "matmul_coop",
        Backend::Msl,
        "naga writes its 16×16 f16 matrices as simdgroup_half16x16 and \
         simdgroup_float16x16, types Metal lacks (its simdgroup matrices are 8×8)",
    ),
    (
        "matmul_coop",
        Backend::Hlsl,
        "naga's HLSL writer does not implement cooperative matrices",
    ),
];

/// Why Tint cannot compile a module: the `excluded` of its variants in the list for Tint.
fn exclusion(family: &str, backend: Backend) -> Option<&'static str> {
    EXCLUDED
        .iter()
        .find(|(excluded, excluded_backend, _)| *excluded == family && *excluded_backend == backend)
        .map(|(_, _, why)| *why)
}

/// A validator that allows `capabilities`, and subgroup operations in compute shaders.
fn validator(capabilities: Capabilities) -> Validator {
    let mut validator = Validator::new(ValidationFlags::all(), capabilities);
    validator
        .subgroup_stages(ShaderStages::COMPUTE)
        .subgroup_operations(SubgroupOperationSet::all());
    validator
}

/// The module of `source` parsed and validated with every capability: the checks of the
/// language itself, which every module must pass.
fn parse(source: &ShaderSource) -> (naga::Module, ModuleInfo) {
    let module = naga::front::wgsl::parse_str(source.wgsl)
        .unwrap_or_else(|e| panic!("{}: {}", source.family, e.emit_to_string(source.wgsl)));
    let info = validator(Capabilities::all())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}: {}", source.family, e.emit_to_string(source.wgsl)));
    (module, info)
}

/// The variant `spec` of `module`: its override constants applied, as wgpu applies them
/// when it creates the pipeline (naga keeps only the entry point, evaluated at them).
fn specialize(
    (module, info): &(naga::Module, ModuleInfo),
    spec: &KernelSpec,
) -> Result<naga::Module, String> {
    let constants: naga::back::PipelineConstants = spec
        .constants
        .iter()
        .map(|&(name, value)| (name.to_string(), value))
        .collect();
    let entry = Some((naga::ShaderStage::Compute, spec.entry));
    naga::back::pipeline_constants::process_overrides(module, info, entry, &constants)
        .map(|(module, _)| module.into_owned())
        .map_err(|e| format!("applying the constants: {e}"))
}

/// The specialized `module` of `spec` validated against what `backend`'s writer supports,
/// then written.
fn compile(module: &naga::Module, spec: &KernelSpec, backend: Backend) -> Result<(), String> {
    let info = validator(backend.capabilities())
        .validate(module)
        .map_err(|e| format!("validation: {}", e.emit_to_string(spec.source.wgsl)))?;
    backend.write(module, &info, spec)
}

#[test]
fn every_variant_compiles_for_every_backend() {
    let specs = every_kernel_spec();
    let mut modules: HashMap<&str, (naga::Module, ModuleInfo)> = HashMap::new();
    let mut variants: BTreeMap<&str, usize> = BTreeMap::new();
    // Failed variants per family and backend.
    let mut failed: BTreeMap<(&str, Backend), usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for spec in &specs {
        let family = spec.source.family;
        *variants.entry(family).or_default() += 1;
        let module = modules.entry(family).or_insert_with(|| parse(spec.source));
        let specialized = specialize(module, spec);
        for backend in Backend::ALL {
            let outcome = specialized
                .as_ref()
                .map_err(String::clone)
                .and_then(|module| compile(module, spec, backend));
            let count = failed.entry((family, backend)).or_default();
            if let Err(error) = outcome {
                *count += 1;
                if exclusion(family, backend).is_none() {
                    failures.push(format!("{} on {}: {error}", spec.name(), backend.name()));
                }
            }
        }
    }

    println!(
        "{} variants written by naga, per family and backend:",
        specs.len()
    );
    print!("{:<16} {:>8}", "family", "variants");
    for backend in Backend::ALL {
        print!("  {:<24}", backend.name());
    }
    println!();
    for (family, count) in &variants {
        print!("{family:<16} {count:>8}");
        for backend in Backend::ALL {
            let cell = match (failed[&(*family, backend)], exclusion(family, backend)) {
                (0, None) => "ok".to_string(),
                (failed, None) => format!("{failed} FAILED"),
                (failed, Some(_)) => format!("excluded ({failed} of {count} fail)"),
            };
            print!("  {cell:<24}");
        }
        println!();
    }
    for (family, backend, why) in EXCLUDED {
        println!("excluded: {family} on {}: {why}", backend.name());
    }
    assert!(
        failures.is_empty(),
        "{} variants failed to compile:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A listed variant of every entry point of every module: a launcher that builds an entry
/// point the lists lack would leave it unchecked. (The subgroup and cooperative-matrix
/// modules hold `matmul.wgsl`'s entry points too, which run from the matmul module.)
#[test]
fn every_entry_point_is_some_listed_variant() {
    let listed: BTreeSet<&str> = every_kernel_spec().iter().map(|spec| spec.entry).collect();
    let mut missing = Vec::new();
    for source in SHADERS.iter().copied().chain([&COOP_SHADER]) {
        let (module, _) = parse(source);
        for entry_point in &module.entry_points {
            if !listed.contains(entry_point.name.as_str()) {
                missing.push(format!("{}::{}", source.family, entry_point.name));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "entry points no list holds: {missing:?}"
    );
}

/// One training step and a beam search of a small Transformer with dropout: the graph's
/// fused attention forward and backward, layer norm, dropout, and decoding.
fn train_and_decode_a_transformer(gpu: &Gpu) -> shadergrad::Result<()> {
    let pairs: Vec<Pair> = ["abc", "ba", "cab"]
        .iter()
        .map(|source| Pair {
            source: source.to_string(),
            target: source.chars().rev().collect(),
        })
        .collect();
    let vocab = PairVocab::learn(&pairs, PairVocabSpec::default()).unwrap();
    let encoded = vocab.encode(&pairs).0;
    let config = Seq2SeqConfig {
        source_vocab_size: vocab.source.len(),
        target_vocab_size: vocab.target.len(),
        layers: 1,
        architecture: Architecture::Transformer(TransformerConfig {
            width: 32,
            heads: 4,
            ff: 64,
            dropout: 0.1,
        }),
    };
    let mut model = Seq2SeqModel::new(gpu, config, vocab, (5, 5), 7)?;
    let optimizer_config = OptimizerConfig::new(Rule::adam(), 1e-3);
    let mut optimizer = model.parameters.optimizer(optimizer_config)?;
    let bucketing = Bucketing {
        batch: pairs.len(),
        round_to: 1,
        pad_last: true,
    };
    for batch in bucketed_batches(&encoded, &bucketing, Some(0))? {
        optimizer.prepare_step(1)?;
        model.train_step(&batch, dropout_seed(7, 1), optimizer.dispatches())?;
    }
    let sources: Vec<Vec<u32>> = encoded.iter().map(|pair| pair.source.clone()).collect();
    model.decode(&sources, 2, sources.len())?;
    Ok(())
}

/// The variants a representative run compiles are all listed, up to the values of size
/// constants. The run: the ONNX conformance cases (every op's forward), a quick benchmark
/// of every family (forwards and backwards, with the matmul autotuner timing its
/// candidates), and a Transformer's training step and decoding.
#[test]
fn the_launchers_build_only_listed_variants() {
    // A device of its own: its pipeline cache holds this run's variants only.
    let gpu = Gpu::default_adapter().expect("a GPU adapter (run scripts/setup-lavapipe.sh)");
    gpu.set_autotune(Autotune::InMemory);
    let cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/onnx-node");
    conformance::run_dir(&gpu, &cases).expect("the ONNX cases run");
    let options = BenchOptions {
        warmup: 0,
        runs: 1,
        ..BenchOptions::new(true)
    };
    bench::run(&gpu, &options, &mut |_| Ok(())).expect("the quick benchmark runs");
    train_and_decode_a_transformer(&gpu).expect("the Transformer trains and decodes");

    let listed = every_kernel_spec();
    let built = gpu.compiled_kernel_specs();
    let unlisted: Vec<String> = built
        .iter()
        .filter(|spec| !listed.iter().any(|other| spec.differs_only_in_sizes(other)))
        .map(KernelSpec::name)
        .collect();
    let families: BTreeSet<&str> = built.iter().map(|spec| spec.source.family).collect();
    let listed_names: BTreeSet<String> = listed.iter().map(KernelSpec::name).collect();
    let at_sampled_sizes = built
        .iter()
        .filter(|spec| listed_names.contains(&spec.name()))
        .count();
    println!(
        "{} variants built ({at_sampled_sizes} of them listed as they are, the others up to \
         their sizes), of the families {families:?}",
        built.len()
    );
    assert!(unlisted.is_empty(), "built but not listed: {unlisted:#?}");
    // Every family but the cooperative-matrix one (no adapter here has matrix units) and
    // the subgroup one (only on adapters with subgroups) was reached.
    for source in SHADERS {
        if source.family != "matmul_subgroup" {
            assert!(
                families.contains(source.family),
                "the run built no {} variant",
                source.family
            );
        }
    }
}

/// Where the list for Tint goes: `$SHADERGRAD_VARIANTS_OUT`, else
/// `target/pipeline-variants.json`.
fn variants_path() -> PathBuf {
    match std::env::var_os("SHADERGRAD_VARIANTS_OUT") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .expect("the target directory holds tmp/")
            .join("pipeline-variants.json"),
    }
}

/// The list for Tint ([`variants_for_other_compilers`]) holds every listed variant, the
/// subgroup module with its `enable`, and excludes just the cooperative-matrix module.
#[test]
fn the_variant_list_for_tint_holds_every_variant() {
    let specs = every_kernel_spec();
    let list = variants_for_other_compilers();
    let list = list.as_array().expect("an array");
    let path = variants_path();
    let text = serde_json::to_string(&list).expect("the list serialises");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    println!("{} variants written to {}", list.len(), path.display());

    let read: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(read.len(), specs.len());
    let subgroup = read
        .iter()
        .find(|variant| variant["family"] == "matmul_subgroup")
        .expect("the subgroup kernel is listed");
    assert!(subgroup["wgsl"]
        .as_str()
        .unwrap()
        .starts_with("enable subgroups;\n"));
    assert!(read
        .iter()
        .all(|variant| variant["excluded"].is_null() == (variant["family"] != "matmul_coop")));
}
