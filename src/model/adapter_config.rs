//! `adapter_config.json` of an AdapterHub-format adapter directory: the bottleneck adapter
//! configurations of the `adapters` library (`seq_bn` alias `pfeiffer`, `seq_bn_inv` alias
//! `pfeiffer+inv`, and older Hub releases that spell the same dicts out).
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Relu,
    /// The exact GELU, `x * Phi(x)` (erf).
    Gelu,
    /// The tanh approximation of GELU (`transformers`' `gelu_new`): what configs of old Hub
    /// releases mean by `"gelu"`.
    #[serde(rename = "gelu_new")]
    GeluTanh,
    Tanh,
    Silu,
}

impl Activation {
    fn parse(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "relu" => Self::Relu,
            "gelu" => Self::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" => Self::GeluTanh,
            "tanh" => Self::Tanh,
            "swish" | "silu" => Self::Silu,
            _ => return None,
        })
    }
}

/// The bottleneck adapter config, with the fields whose semantics the toolkit implements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterConfig {
    /// hidden size / bottleneck size; per-layer overrides are read from the weights' shapes.
    pub reduction_factor: f64,
    pub non_linearity: Activation,
    pub original_ln_before: bool,
    pub original_ln_after: bool,
    pub residual_before_ln: bool,
    pub adapter_residual_before_ln: bool,
    pub scaling: f64,
    pub dropout: f64,
    /// Layers that carry no adapter.
    pub leave_out: Vec<usize>,
    /// NICE invertible adapter on the embedding output (MAD-X language adapters).
    pub inv_adapter: Option<InvAdapterConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvAdapterConfig {
    pub reduction_factor: f64,
    pub non_linearity: Activation,
}

impl AdapterConfig {
    /// `seq_bn` (`pfeiffer`): the MAD-X task adapter.
    pub fn seq_bn() -> Self {
        Self {
            reduction_factor: 16.0,
            non_linearity: Activation::Relu,
            original_ln_before: true,
            original_ln_after: true,
            residual_before_ln: true,
            adapter_residual_before_ln: false,
            scaling: 1.0,
            dropout: 0.0,
            leave_out: Vec::new(),
            inv_adapter: None,
        }
    }

    /// `seq_bn_inv` (`pfeiffer+inv`): the MAD-X language adapter.
    pub fn seq_bn_inv() -> Self {
        Self {
            inv_adapter: Some(InvAdapterConfig { reduction_factor: 2.0, non_linearity: Activation::Relu }),
            ..Self::seq_bn()
        }
    }

    fn named(name: &str) -> Option<Self> {
        match name {
            "seq_bn" | "pfeiffer" => Some(Self::seq_bn()),
            "seq_bn_inv" | "pfeiffer+inv" => Some(Self::seq_bn_inv()),
            _ => None,
        }
    }

    /// Reads an adapter directory's `adapter_config.json`: the config plus the name the
    /// adapter was saved under and the hidden size it was trained for.
    pub fn load(path: &Path) -> Result<SavedAdapterConfig> {
        let text = crate::data::read_text(path)?;
        let value: Value = serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", path.display()))?;
        SavedAdapterConfig::from_json(&value).with_context(|| format!("in adapter config {}", path.display()))
    }

    /// Parses the `config` entry: a known config name or a dict of the library's fields.
    pub fn from_json(value: &Value) -> Result<Self> {
        Self::parse(value, Era::Versioned)
    }

    fn parse(value: &Value, era: Era) -> Result<Self> {
        match value {
            Value::String(name) => Self::named(name).with_context(|| {
                format!("unknown adapter config `{name}` (supported: seq_bn, pfeiffer, seq_bn_inv, pfeiffer+inv)")
            }),
            Value::Object(map) => Self::from_map(map, era),
            other => bail!("`config` must be a config name or an object, found {other}"),
        }
    }

    fn from_map(map: &Map<String, Value>, era: Era) -> Result<Self> {
        let mut cfg = Self::seq_bn();
        let mut inv_kind: Option<String> = None;
        let mut inv_factor = 2.0;
        let mut inv_act: Option<Activation> = None;
        // The v1 spelling `invertible_adapter: {block_type, reduction_factor, ...}`; the library
        // applies it after the other keys, so it wins over `inv_adapter*`.
        let mut v1_inv: Option<(Option<String>, f64)> = None;
        for (key, value) in map {
            let unsupported = || format!("adapter config key `{key}` = {value} is not supported by the toolkit");
            match key.as_str() {
                "architecture" => {
                    if !(value.is_null() || value.as_str() == Some("bottleneck")) {
                        bail!(unsupported());
                    }
                }
                "reduction_factor" => cfg.reduction_factor = reduction_factor(value).with_context(unsupported)?,
                "non_linearity" => {
                    cfg.non_linearity = value.as_str().and_then(|a| Activation::parse(era.rename(a))).with_context(unsupported)?
                }
                "original_ln_before" => cfg.original_ln_before = boolean(key, value)?,
                "original_ln_after" => cfg.original_ln_after = boolean(key, value)?,
                "residual_before_ln" => cfg.residual_before_ln = boolean(key, value).with_context(unsupported)?,
                "adapter_residual_before_ln" => cfg.adapter_residual_before_ln = boolean(key, value)?,
                "scaling" => cfg.scaling = value.as_f64().with_context(unsupported)?,
                "dropout" => cfg.dropout = value.as_f64().with_context(unsupported)?,
                "leave_out" => {
                    cfg.leave_out = serde_json::from_value(value.clone()).with_context(unsupported)?;
                }
                "inv_adapter" => inv_kind = value.as_str().map(str::to_string),
                "inv_adapter_reduction_factor" => {
                    if !value.is_null() {
                        inv_factor = value.as_f64().with_context(unsupported)?
                    }
                }
                "invertible_adapter" => match value {
                    // Python truthiness: null and {} leave the config as it is.
                    Value::Null => {}
                    Value::Object(v1) if v1.is_empty() => {}
                    Value::Object(v1) => {
                        let kind = match v1.get("block_type") {
                            Some(Value::Null) => None,
                            Some(Value::String(s)) => Some(s.clone()),
                            _ => bail!(unsupported()),
                        };
                        let factor = v1.get("reduction_factor").and_then(Value::as_f64).with_context(unsupported)?;
                        v1_inv = Some((kind, factor));
                    }
                    _ => bail!(unsupported()),
                },
                "inv_adapter_non_linearity" => {
                    inv_act = Some(value.as_str().and_then(Activation::parse).with_context(unsupported)?)
                }
                // Features the toolkit does not implement: accepted only at their off value.
                "mh_adapter" | "ln_before" | "ln_after" | "is_parallel" | "use_gating" | "phm_layer"
                | "cross_adapter" => {
                    if boolean(key, value)? {
                        bail!(unsupported());
                    }
                }
                "stochastic_depth" => {
                    if value.as_f64() != Some(0.0) {
                        bail!(unsupported());
                    }
                }
                "output_adapter" => {
                    if !boolean(key, value)? {
                        bail!(unsupported());
                    }
                }
                // Initialisation and PHM settings: irrelevant to a loaded adapter's forward pass.
                "init_weights" | "factorized_phm_W" | "factorized_phm_rule" | "hypercomplex_nonlinearity"
                | "learn_phm" | "phm_bias" | "phm_c_init" | "phm_dim" | "phm_init_range" | "phm_rank"
                | "shared_W_phm" | "shared_phm_rule" | "phm_rule" | "phm_rule_init_range" | "init_weights_seed" => {}
                _ => bail!("unknown adapter config key `{key}`"),
            }
        }
        if let Some((kind, factor)) = v1_inv {
            (inv_kind, inv_factor) = (kind, factor);
        }
        match inv_kind.as_deref() {
            None => {}
            Some("nice") => {
                cfg.inv_adapter = Some(InvAdapterConfig {
                    reduction_factor: inv_factor,
                    // The library builds the coupling block with the adapter's own non-linearity.
                    non_linearity: inv_act.unwrap_or(cfg.non_linearity),
                })
            }
            Some(other) => bail!("invertible adapter `{other}` is not supported (only `nice`)"),
        }
        Ok(cfg)
    }

    /// The dict the `adapters` library writes for this config, so that it loads our adapters.
    pub fn to_json(&self) -> Value {
        let act = |a: Activation| serde_json::to_value(a).expect("activation serialises");
        let mut map = Map::new();
        let mut put = |k: &str, v: Value| {
            map.insert(k.to_string(), v);
        };
        put("adapter_residual_before_ln", self.adapter_residual_before_ln.into());
        put("cross_adapter", false.into());
        put("dropout", self.dropout.into());
        put("init_weights", "bert".into());
        put("is_parallel", false.into());
        put("leave_out", self.leave_out.clone().into());
        put("ln_after", false.into());
        put("ln_before", false.into());
        put("mh_adapter", false.into());
        put("non_linearity", act(self.non_linearity));
        put("original_ln_after", self.original_ln_after.into());
        put("original_ln_before", self.original_ln_before.into());
        put("output_adapter", true.into());
        put("phm_layer", false.into());
        put("reduction_factor", self.reduction_factor.into());
        put("residual_before_ln", self.residual_before_ln.into());
        put("scaling", self.scaling.into());
        put("stochastic_depth", 0.0.into());
        put("use_gating", false.into());
        match &self.inv_adapter {
            Some(inv) => {
                put("inv_adapter", "nice".into());
                put("inv_adapter_reduction_factor", inv.reduction_factor.into());
            }
            None => {
                put("inv_adapter", Value::Null);
                put("inv_adapter_reduction_factor", Value::Null);
            }
        }
        Value::Object(map)
    }
}

/// Which `adapters` library wrote a config: one without a `version` key comes from an old Hub
/// release, whose activation names the library translates on load (`utils.ACTIVATION_RENAME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Era {
    Versioned,
    Legacy,
}

impl Era {
    fn rename(self, activation: &str) -> &str {
        match (self, activation) {
            (Era::Legacy, "gelu") => "gelu_new",
            (Era::Legacy, "gelu_orig") => "gelu",
            (_, other) => other,
        }
    }
}

/// The whole of `adapter_config.json`.
#[derive(Debug, Clone)]
pub struct SavedAdapterConfig {
    pub config: AdapterConfig,
    pub name: String,
    pub hidden_size: Option<usize>,
    pub model_type: Option<String>,
}

impl SavedAdapterConfig {
    pub fn from_json(value: &Value) -> Result<Self> {
        let config = value.get("config").context("missing key `config`")?;
        let era = if value.get("version").is_some() { Era::Versioned } else { Era::Legacy };
        let config = AdapterConfig::parse(config, era)?;
        let name = value.get("name").and_then(Value::as_str).context("missing key `name`")?.to_string();
        let hidden_size = value.get("hidden_size").and_then(Value::as_u64).map(|h| h as usize);
        let model_type = value.get("model_type").and_then(Value::as_str).map(str::to_string);
        Ok(Self { config, name, hidden_size, model_type })
    }

    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "config": self.config.to_json(),
            "hidden_size": self.hidden_size,
            "model_class": Value::Null,
            "model_name": Value::Null,
            "model_type": self.model_type,
            "name": self.name,
            "version": "adapters.1.3.0",
        })
    }
}

fn boolean(key: &str, value: &Value) -> Result<bool> {
    value.as_bool().with_context(|| format!("adapter config key `{key}` must be true or false, found {value}"))
}

fn reduction_factor(value: &Value) -> Option<f64> {
    // Older configs give a per-layer map with a "default" entry; the per-layer sizes are
    // then taken from the weights themselves.
    value.as_f64().or_else(|| value.get("default").and_then(Value::as_f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_configs() {
        assert_eq!(AdapterConfig::from_json(&"pfeiffer".into()).unwrap(), AdapterConfig::seq_bn());
        assert!(AdapterConfig::from_json(&"seq_bn_inv".into()).unwrap().inv_adapter.is_some());
        let err = AdapterConfig::from_json(&"lora".into()).unwrap_err();
        assert!(format!("{err:#}").contains("unknown adapter config `lora`"));
    }

    #[test]
    fn unknown_and_unsupported_keys_are_named() {
        let err = AdapterConfig::from_json(&serde_json::json!({"reduction_factor": 16, "bogus": 1})).unwrap_err();
        assert!(format!("{err:#}").contains("unknown adapter config key `bogus`"), "{err:#}");
        let err = AdapterConfig::from_json(&serde_json::json!({"mh_adapter": true})).unwrap_err();
        assert!(format!("{err:#}").contains("`mh_adapter`"), "{err:#}");
    }

    #[test]
    fn legacy_configs_use_old_activation_names() {
        let saved = |config: Value, version: bool| {
            let mut v = serde_json::json!({"config": config, "name": "en"});
            if version {
                v["version"] = "adapters.1.3.0".into();
            }
            SavedAdapterConfig::from_json(&v).unwrap().config
        };
        let act = |name: &str| serde_json::json!({"non_linearity": name});
        assert_eq!(saved(act("gelu"), false).non_linearity, Activation::GeluTanh);
        assert_eq!(saved(act("gelu_orig"), false).non_linearity, Activation::Gelu);
        assert_eq!(saved(act("relu"), false).non_linearity, Activation::Relu);
        assert_eq!(saved(act("gelu"), true).non_linearity, Activation::Gelu);
        assert_eq!(saved(act("gelu_new"), true).non_linearity, Activation::GeluTanh);
        let v = serde_json::json!({"config": act("gelu_orig"), "name": "en", "version": "adapters.1.3.0"});
        assert!(SavedAdapterConfig::from_json(&v).is_err());
    }

    #[test]
    fn legacy_invertible_adapter_key() {
        let cfg = AdapterConfig::from_json(&serde_json::json!({
            "non_linearity": "gelu_new",
            "reduction_factor": 2,
            "inv_adapter": null,
            "invertible_adapter": {"block_type": "nice", "non_linearity": "relu", "reduction_factor": 4},
        }))
        .unwrap();
        // The nested non_linearity is ignored: NICE uses the adapter's own.
        let expected = InvAdapterConfig { reduction_factor: 4.0, non_linearity: Activation::GeluTanh };
        assert_eq!(cfg.inv_adapter, Some(expected));
        let none = AdapterConfig::from_json(&serde_json::json!({"invertible_adapter": null})).unwrap();
        assert_eq!(none.inv_adapter, None);
        let err = AdapterConfig::from_json(&serde_json::json!({"invertible_adapter": {"block_type": "glow", "reduction_factor": 2}}))
            .unwrap_err();
        assert!(format!("{err:#}").contains("`glow` is not supported"), "{err:#}");
    }

    #[test]
    fn gelu_tanh_is_written_as_gelu_new() {
        let cfg = AdapterConfig { non_linearity: Activation::GeluTanh, ..AdapterConfig::seq_bn() };
        assert_eq!(cfg.to_json()["non_linearity"], "gelu_new");
        assert_eq!(AdapterConfig::from_json(&cfg.to_json()).unwrap(), cfg);
    }

    #[test]
    fn round_trips_through_library_dict() {
        let cfg = AdapterConfig { scaling: 0.5, reduction_factor: 8.0, ..AdapterConfig::seq_bn_inv() };
        assert_eq!(AdapterConfig::from_json(&cfg.to_json()).unwrap(), cfg);
    }
}
