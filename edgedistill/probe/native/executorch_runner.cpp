// A native ExecuTorch probe: the same measurement as probe.py, in a process with no Python.
//
// On a phone there is no interpreter and no torch import, so this is the cold start an app
// sees: exec, dynamic loading of the ExecuTorch libraries, program load, method load (delegate
// init), first inference. It speaks probe.py's protocol: the parent (edgedistill/bench/native.py)
// turns a probe request into the command line below, and this program writes the same JSON
// result (atomically: a temporary file, then rename), the same partial files for a parent that
// has to kill it, and the model's outputs as a .npy. The harness owns the verdicts; this file
// only measures, with probe.py's timing rules (warm-up, minimum count AND duration, a maximum
// duration, the same-input caching check, sampled outputs compared with the outputs run).
//
// Usage: executorch_runner --model M.pte --mode cold|outputs|full|warm|describe
//          [--inputs SPEC] [--threads N] [--batch-size B] [--warmup-iterations N]
//          [--min-iterations N] [--min-duration-s S] [--max-duration-s S] [--same-input 0|1]
//          [--outputs-path OUT.npy] --result-path R.json [--parent-start-wall-ns NS]
//          [--device CPU] [--option KEY=VALUE ...]
// SPEC lists the inputs in the program's order, one per line, tab-separated:
//   name  scalar_type  itemsize  d0,d1,...  raw_file   (samples along d0, C order)
// A relative raw_file is read from SPEC's folder, so a runner can move the folder to a device.
// Without --parent-start-wall-ns, EDGEDISTILL_PARENT_START_WALL_NS (set by a device-side
// launcher, whose clock is the device's) says when the process was started.
//
// Only the C++ standard library and ExecuTorch's own headers: it builds against the headers and
// libraries inside the executorch wheel, or an Android build of ExecuTorch (see CMakeLists.txt).

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <unistd.h>

#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>
#include <executorch/runtime/core/error.h>
#include <executorch/runtime/platform/runtime.h>

#ifndef EDGEDISTILL_EXECUTORCH_VERSION
#define EDGEDISTILL_EXECUTORCH_VERSION "unknown"
#endif

// The wheel ships the thread pool library but not its header (threadpool.h). These are the two
// members used, declared exactly as upstream declares them (non-virtual members: the linker
// matches them by name and argument types).
namespace executorch::extension::threadpool {
class ThreadPool {
 public:
  size_t get_thread_count() const;
  bool _unsafe_reset_threadpool(uint32_t num_threads);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool

namespace {

using executorch::aten::ScalarType;
using executorch::extension::Module;
using executorch::extension::TensorPtr;
using executorch::runtime::Error;
using executorch::runtime::EValue;

const char* kSchema = "edgedistill.probe/2";
const int kOutputSampleStride = 37;  // probe.py's: a prime, so kept iterations land on varied inputs
const size_t kMaxOutputSamples = 64;
const double kPartialEveryS = 1.0;
const int kSameInputBlock = 10;

// The first statement of main() sets this: exec, the dynamic loader and the libraries' static
// initializers (backend registration) all come before it, in interpreter_ms.
int64_t g_start_wall_ns = 0;

int64_t wall_ns() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

int64_t mono_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

double ms_between(int64_t a, int64_t b) { return double(b - a) / 1e6; }

// A failure reported to the parent as data: probe.py's error_type / error.
struct ProbeError : std::runtime_error {
  std::string type;
  ProbeError(std::string t, const std::string& msg) : std::runtime_error(msg), type(std::move(t)) {}
};

std::string et_error(Error e) {
  char buf[64];
  snprintf(buf, sizeof buf, "%s (0x%x)", executorch::runtime::to_string(e), unsigned(e));
  return buf;
}

// ------------------------------------------------------------------ JSON output

std::string json_str(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += char(c);
        }
    }
  }
  return out + "\"";
}

// Python's json reads NaN (probe.py writes it where /proc is unreadable).
std::string json_num(double v, int decimals = 4) {
  if (std::isnan(v)) return "NaN";
  char buf[64];
  snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string json_int(int64_t v) { return std::to_string(v); }

std::string json_list(const std::vector<double>& v, int decimals) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) out += ",";
    out += json_num(v[i], decimals);
  }
  return out + "]";
}

std::string json_ints(const std::vector<int64_t>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) out += ",";
    out += json_int(v[i]);
  }
  return out + "]";
}

// An object built in insertion order; values are JSON text already.
struct Obj {
  std::vector<std::pair<std::string, std::string>> items;
  Obj& set(const std::string& k, const std::string& json) {
    for (auto& kv : items)
      if (kv.first == k) {
        kv.second = json;
        return *this;
      }
    items.emplace_back(k, json);
    return *this;
  }
  std::string dump() const {
    std::string out = "{";
    for (size_t i = 0; i < items.size(); ++i) {
      if (i) out += ",";
      out += json_str(items[i].first) + ":" + items[i].second;
    }
    return out + "}";
  }
};

void write_file_atomic(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw ProbeError("OSError", "cannot write " + tmp + ": " + strerror(errno));
    f << text;
    if (!f.flush()) throw ProbeError("OSError", "cannot write " + tmp + ": " + strerror(errno));
  }
  if (rename(tmp.c_str(), path.c_str()) != 0)
    throw ProbeError("OSError", "cannot rename " + tmp + " to " + path + ": " + strerror(errno));
}

// ------------------------------------------------------------------ memory

// VmRSS / VmHWM from /proc/self/status, in MiB; NaN where unreadable (probe.py's _status_mb).
double status_mb(const char* field) {
  std::ifstream f("/proc/self/status");
  std::string line, key = std::string(field) + ":";
  while (std::getline(f, line)) {
    if (line.compare(0, key.size(), key) == 0) {
      std::istringstream rest(line.substr(key.size()));
      double kb;
      if (rest >> kb) return kb / 1024.0;
    }
  }
  return NAN;
}

// ------------------------------------------------------------------ dtypes

struct DType {
  const char* numpy;  // numpy's name, what the harness calls a dtype
  const char* descr;  // .npy header descr (little-endian)
  size_t itemsize;
};

bool dtype_of(ScalarType t, DType* out) {
  switch (t) {
    case ScalarType::Byte: *out = {"uint8", "|u1", 1}; return true;
    case ScalarType::Char: *out = {"int8", "|i1", 1}; return true;
    case ScalarType::Short: *out = {"int16", "<i2", 2}; return true;
    case ScalarType::Int: *out = {"int32", "<i4", 4}; return true;
    case ScalarType::Long: *out = {"int64", "<i8", 8}; return true;
    case ScalarType::Half: *out = {"float16", "<f2", 2}; return true;
    case ScalarType::Float: *out = {"float32", "<f4", 4}; return true;
    case ScalarType::Double: *out = {"float64", "<f8", 8}; return true;
    case ScalarType::Bool: *out = {"bool", "|b1", 1}; return true;
    default: return false;
  }
}

std::string dtype_name(ScalarType t) {
  DType d;
  return dtype_of(t, &d) ? d.numpy : "scalar type " + std::to_string(int(t));
}

double half_to_double(uint16_t h) {
  int sign = h >> 15, exp = (h >> 10) & 0x1f, frac = h & 0x3ff;
  double v = exp == 0 ? std::ldexp(frac, -24) : exp == 31 ? (frac ? NAN : INFINITY)
                                                          : std::ldexp(frac | 0x400, exp - 25);
  return sign ? -v : v;
}

double element(const uint8_t* p, ScalarType t, size_t i) {
  switch (t) {
    case ScalarType::Byte: return p[i];
    case ScalarType::Char: return reinterpret_cast<const int8_t*>(p)[i];
    case ScalarType::Short: return reinterpret_cast<const int16_t*>(p)[i];
    case ScalarType::Int: return reinterpret_cast<const int32_t*>(p)[i];
    case ScalarType::Long: return double(reinterpret_cast<const int64_t*>(p)[i]);
    case ScalarType::Half: return half_to_double(reinterpret_cast<const uint16_t*>(p)[i]);
    case ScalarType::Float: return reinterpret_cast<const float*>(p)[i];
    case ScalarType::Double: return reinterpret_cast<const double*>(p)[i];
    case ScalarType::Bool: return p[i] ? 1.0 : 0.0;
    default: return NAN;
  }
}

// ------------------------------------------------------------------ arguments

struct Args {
  std::string model, mode, inputs, outputs_path, result_path, device = "CPU";
  std::vector<std::string> options;
  int threads = 1, batch = 1, warmup = 20, min_n = 200;
  double min_s = 0.5, max_s = 20.0;
  bool same_input = false;
  int64_t parent_start_wall_ns = 0;
};

Args parse_args(int argc, char** argv) {
  Args a;
  std::map<std::string, std::string> kv;
  for (int i = 1; i < argc; ++i) {
    std::string key = argv[i];
    if (key.compare(0, 2, "--") != 0 || i + 1 >= argc)
      throw ProbeError("UsageError", "expected --name value pairs, found " + key);
    std::string value = argv[++i];
    if (key == "--option") a.options.push_back(value);
    else kv[key.substr(2)] = value;
  }
  auto take = [&](const char* k, std::string* dst) {
    auto it = kv.find(k);
    if (it != kv.end()) { *dst = it->second; kv.erase(it); }
  };
  auto num = [&](const char* k, auto* dst) {
    std::string s;
    take(k, &s);
    if (s.empty()) return;
    std::istringstream in(s);
    in >> *dst;
    if (!in || !in.eof()) throw ProbeError("UsageError", std::string("--") + k + ": expected a number, found " + s);
  };
  std::string same;
  take("model", &a.model);
  take("mode", &a.mode);
  take("inputs", &a.inputs);
  take("outputs-path", &a.outputs_path);
  take("result-path", &a.result_path);
  take("device", &a.device);
  take("same-input", &same);
  num("threads", &a.threads);
  num("batch-size", &a.batch);
  num("warmup-iterations", &a.warmup);
  num("min-iterations", &a.min_n);
  num("min-duration-s", &a.min_s);
  num("max-duration-s", &a.max_s);
  num("parent-start-wall-ns", &a.parent_start_wall_ns);
  a.same_input = same == "1";
  if (!a.parent_start_wall_ns) {
    const char* launched = std::getenv("EDGEDISTILL_PARENT_START_WALL_NS");
    if (launched && *launched) a.parent_start_wall_ns = std::stoll(launched);
  }
  if (!kv.empty()) throw ProbeError("UsageError", "unknown option --" + kv.begin()->first);
  if (a.result_path.empty()) throw ProbeError("UsageError", "--result-path is required");
  return a;
}

// ------------------------------------------------------------------ inputs

struct Input {
  std::string name;
  ScalarType type;
  size_t itemsize;
  std::vector<int64_t> shape;  // (N, ...): samples along axis 0
  std::vector<uint8_t> data;
  size_t sample_bytes() const {
    size_t n = itemsize;
    for (size_t d = 1; d < shape.size(); ++d) n *= size_t(shape[d]);
    return n;
  }
};

std::vector<Input> read_inputs(const std::string& spec_path) {
  std::ifstream spec(spec_path);
  if (!spec) throw ProbeError("FileNotFoundError", "inputs spec not found: " + spec_path);
  std::vector<Input> inputs;
  std::string line;
  while (std::getline(spec, line)) {
    if (line.empty()) continue;
    std::vector<std::string> f;
    std::istringstream cols(line);
    std::string col;
    while (std::getline(cols, col, '\t')) f.push_back(col);
    if (f.size() != 5) throw ProbeError("ValueError", "inputs spec line: expected 5 tab-separated fields, found " + line);
    Input in;
    in.name = f[0];
    in.type = ScalarType(std::stoi(f[1]));
    in.itemsize = std::stoul(f[2]);
    std::istringstream dims(f[3]);
    std::string d;
    while (std::getline(dims, d, ',')) in.shape.push_back(std::stoll(d));
    if (in.shape.empty()) throw ProbeError("ValueError", "input " + in.name + ": samples need axis 0");
    if (!f[4].empty() && f[4][0] != '/') {
      size_t slash = spec_path.rfind('/');
      if (slash != std::string::npos) f[4] = spec_path.substr(0, slash + 1) + f[4];
    }
    std::ifstream raw(f[4], std::ios::binary);
    if (!raw) throw ProbeError("FileNotFoundError", "input " + in.name + ": file not found: " + f[4]);
    in.data.assign(std::istreambuf_iterator<char>(raw), std::istreambuf_iterator<char>());
    if (in.data.size() != in.sample_bytes() * size_t(in.shape[0]))
      throw ProbeError("ValueError", "input " + in.name + ": " + f[4] + " holds " + std::to_string(in.data.size()) +
                                         " bytes, its shape needs " + std::to_string(in.sample_bytes() * size_t(in.shape[0])));
    inputs.push_back(std::move(in));
  }
  if (inputs.empty()) throw ProbeError("ValueError", "inputs spec lists no inputs: " + spec_path);
  return inputs;
}

std::string shape_text(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// One call's inputs: tensors over the samples' own memory (no copy; the method copies them
// into its planned memory in set_input, as the Python runtime's does).
struct Batch {
  std::vector<TensorPtr> tensors;
  std::vector<EValue> values;
};

std::vector<Batch> make_batches(std::vector<Input>& inputs, int batch) {
  std::vector<Batch> out;
  int64_t n = inputs[0].shape[0];
  for (int64_t k = 0; k + batch <= n; k += batch) {
    Batch b;
    for (auto& in : inputs) {
      std::vector<executorch::aten::SizesType> sizes(in.shape.begin(), in.shape.end());
      sizes[0] = batch;
      b.tensors.push_back(executorch::extension::from_blob(in.data.data() + size_t(k) * in.sample_bytes(),
                                                           sizes, in.type));
    }
    for (auto& t : b.tensors) b.values.emplace_back(*t);
    out.push_back(std::move(b));
  }
  return out;
}

// ------------------------------------------------------------------ the model

struct Output {
  ScalarType type;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

class Model {
 public:
  explicit Model(const std::string& path) : module_(path, Module::LoadMode::File) {}

  double load_program() {
    int64_t t = mono_ns();
    // InternalConsistency, as the Python runtime's load_program: a damaged file is an error,
    // not a crash.
    Error e = module_.load(executorch::runtime::Program::Verification::InternalConsistency);
    if (e != Error::Ok) throw ProbeError("RuntimeError", "ExecuTorch could not load the program: " + et_error(e));
    return ms_between(t, mono_ns());
  }

  void load_method() {
    Error e = module_.load_method("forward");
    if (e != Error::Ok) throw ProbeError("RuntimeError", "ExecuTorch could not load method 'forward': " + et_error(e));
    auto meta = module_.method_meta("forward");
    if (!meta.ok()) throw ProbeError("RuntimeError", "no metadata for method 'forward': " + et_error(meta.error()));
    for (size_t i = 0; i < meta->num_inputs(); ++i) inputs_.push_back(describe(meta->input_tensor_meta(i), "input", i));
    for (size_t i = 0; i < meta->num_outputs(); ++i) outputs_.push_back(describe(meta->output_tensor_meta(i), "output", i));
  }

  struct Port {
    std::string name;
    bool tensor;
    ScalarType type;
    std::vector<int64_t> shape;
  };
  const std::vector<Port>& inputs() const { return inputs_; }
  const std::vector<Port>& outputs() const { return outputs_; }

  // ONE inference; returns the first output, still owned by the method (valid until the next).
  const executorch::aten::Tensor& run(const Batch& b) {
    auto result = module_.execute("forward", b.values);
    if (!result.ok()) throw ProbeError("RuntimeError", "ExecuTorch execute failed: " + et_error(result.error()));
    last_ = std::move(*result);
    if (last_.empty() || !last_[0].isTensor()) throw ProbeError("RuntimeError", "the first output is not a tensor");
    return last_[0].toTensor();
  }

  static Output copy(const executorch::aten::Tensor& t) {
    Output o{t.scalar_type(), {}, {}};
    for (auto s : t.sizes()) o.shape.push_back(s);
    auto p = static_cast<const uint8_t*>(t.const_data_ptr());
    o.bytes.assign(p, p + t.nbytes());
    return o;
  }

 private:
  template <typename R>
  Port describe(R info, const char* kind, size_t i) {
    Port p{std::string(kind) + "_" + std::to_string(i), info.ok(), ScalarType::Float, {}};
    if (info.ok()) {
      p.type = info->scalar_type();
      for (auto s : info->sizes()) p.shape.push_back(s);
    }
    return p;
  }

  Module module_;
  std::vector<Port> inputs_, outputs_;
  std::vector<EValue> last_;
};

std::string ports_json(const std::vector<Model::Port>& ports) {
  std::string out = "[";
  for (size_t i = 0; i < ports.size(); ++i) {
    const auto& p = ports[i];
    Obj o;
    o.set("name", json_str(p.name));
    o.set("shape", p.tensor ? json_ints(p.shape) : "null");
    o.set("dtype", p.tensor ? json_str(dtype_name(p.type)) : json_str("not a tensor"));
    out += (i ? "," : "") + o.dump();
  }
  return out + "]";
}

// The inputs must be the program's, in number, dtype and shape (batch `batch`), before timing.
void check_inputs(const Model& model, const std::vector<Input>& inputs, int batch) {
  const auto& ports = model.inputs();
  if (ports.size() != inputs.size())
    throw ProbeError("ValueError", "the program takes " + std::to_string(ports.size()) + " input(s), " +
                                       std::to_string(inputs.size()) + " given");
  for (size_t i = 0; i < ports.size(); ++i) {
    const auto& p = ports[i];
    const auto& in = inputs[i];
    if (!p.tensor) throw ProbeError("ValueError", p.name + " is not a tensor input; only tensor inputs are supported");
    std::vector<int64_t> given(in.shape);
    given[0] = batch;
    if (!p.shape.empty() && p.shape[0] != batch && i == 0)
      throw ProbeError("UnsupportedBatch", "the model's batch dimension is fixed at " + std::to_string(p.shape[0]) +
                                               "; batch " + std::to_string(batch) + " needs a dynamic batch axis");
    if (given != p.shape || in.type != p.type)
      throw ProbeError("ValueError", "input " + json_str(p.name) + ": expected shape " + shape_text(p.shape) + " dtype " +
                                         dtype_name(p.type) + ", got shape " + shape_text(given) + " dtype " +
                                         dtype_name(in.type));
  }
}

// ------------------------------------------------------------------ partial results

// What this process measured so far, for a parent that kills it (probe.py's _Partial): the result
// so far, rewritten atomically, and every warm sample appended as native int64 ns.
struct Partial {
  std::string path;
  size_t saved = 0;
  void save(Obj result) {
    if (path.empty()) return;
    result.set("ok", "false").set("partial", "true");
    write_file_atomic(path, result.dump());
  }
  void save_warm(const std::vector<int64_t>& times) {
    if (path.empty() || saved >= times.size()) return;
    FILE* f = fopen((path + ".warm_ns").c_str(), "ab");
    if (!f) return;
    fwrite(times.data() + saved, sizeof(int64_t), times.size() - saved, f);
    fclose(f);
    saved = times.size();
  }
};

// ------------------------------------------------------------------ timing

struct Kept {
  size_t sample;
  Output out;
};

struct Warm {
  std::vector<int64_t> times;
  double elapsed_s = 0;
  std::vector<Kept> kept;
};

// probe.py's _timed_loop: single calls until both the minimum count and duration are met, or the
// maximum duration; every keep_every-th output is copied after the clock stopped.
Warm timed_loop(Model& model, const std::vector<Batch>& samples, const Args& a, int keep_every, Partial* partial) {
  Warm w;
  int64_t began = mono_ns(), every = int64_t(kPartialEveryS * 1e9), next_save = began + every;
  for (size_t i = 0;; ++i) {
    size_t k = i % samples.size();
    int64_t t0 = mono_ns();
    const auto& out = model.run(samples[k]);
    int64_t t1 = mono_ns();
    w.times.push_back(t1 - t0);
    if (keep_every && i % keep_every == 0 && w.kept.size() < kMaxOutputSamples) w.kept.push_back({k, Model::copy(out)});
    w.elapsed_s = double(t1 - began) / 1e9;
    if ((int64_t(i + 1) >= a.min_n && w.elapsed_s >= a.min_s) || w.elapsed_s >= a.max_s) return w;
    if (partial && t1 >= next_save) {
      partial->save_warm(w.times);
      next_save = mono_ns() + every;  // the save's own time does not count towards the next
    }
  }
}

double median_ms(std::vector<int64_t> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  double m = n % 2 ? double(v[n / 2]) : (double(v[n / 2 - 1]) + double(v[n / 2])) / 2.0;
  return m / 1e6;
}

// The timing loop's own cost per iteration, with `touch` in place of the inference.
template <typename F>
double overhead_ms(F touch, const std::vector<Batch>& samples, size_t n) {
  std::vector<int64_t> costs;
  volatile size_t sink = 0;
  for (size_t j = 0; j < n; ++j) {
    int64_t t0 = mono_ns();
    sink = sink + touch(samples[j % samples.size()]);
    int64_t t1 = mono_ns();
    costs.push_back(t1 - t0);
  }
  return median_ms(costs);
}

std::vector<double> to_ms(const std::vector<int64_t>& ns) {
  std::vector<double> out;
  out.reserve(ns.size());
  for (auto t : ns) out.push_back(double(t) / 1e6);
  return out;
}

Obj warm_json(Model& model, const std::vector<Batch>& samples, const Args& a, int keep_every, Partial* partial,
              std::vector<Kept>* kept) {
  for (int i = 0; i < a.warmup; ++i) model.run(samples[i % samples.size()]);
  Warm w = timed_loop(model, samples, a, keep_every, partial);
  size_t n = w.times.size(), overhead_n = std::min<size_t>(n, 1000);
  Obj o;
  o.set("samples_ms", json_list(to_ms(w.times), 5));
  o.set("duration_s", json_num(w.elapsed_s, 4));
  bool hit_max = w.elapsed_s >= a.max_s && (int64_t(n) < a.min_n || w.elapsed_s < a.min_s);
  o.set("hit_max_duration", hit_max ? "true" : "false");
  o.set("loop_overhead_ms", json_num(overhead_ms([](const Batch&) { return size_t(0); }, samples, overhead_n), 6));
  // The harness's own per-call work here is picking the sample's prepared inputs (they were
  // checked once against the program before timing).
  o.set("harness_overhead_ms",
        json_num(overhead_ms([](const Batch& b) { return b.values.size(); }, samples, overhead_n), 6));
  if (kept) *kept = std::move(w.kept);
  return o;
}

// probe.py's _same_input: blocks of one repeated input alternating with blocks of varied ones.
void same_input(Model& model, const std::vector<Batch>& samples, const Args& a, Obj* warm) {
  size_t n = std::max<size_t>(50, size_t(a.min_n / 2));
  std::vector<int64_t> same, varied;
  int64_t began = mono_ns();
  size_t j = 0, others_from = samples.size() > 1 ? 1 : 0, others = samples.size() - others_from;
  while (same.size() < n && double(mono_ns() - began) / 1e9 < a.max_s) {
    for (int b = 0; b < kSameInputBlock; ++b) {
      int64_t t0 = mono_ns();
      model.run(samples[0]);
      same.push_back(mono_ns() - t0);
    }
    for (int b = 0; b < kSameInputBlock; ++b) {
      const Batch& x = samples[others_from + j++ % others];
      int64_t t0 = mono_ns();
      model.run(x);
      varied.push_back(mono_ns() - t0);
    }
  }
  warm->set("same_input_samples_ms", json_list(to_ms(same), 5));
  warm->set("same_input_varied_ms", json_list(to_ms(varied), 5));
}

// Every sample's first output at batch 1, concatenated on axis 0, as probe.py's _all_outputs.
Output all_outputs(Model& model, const std::vector<Batch>& samples) {
  Output all{ScalarType::Float, {}, {}};
  for (size_t k = 0; k < samples.size(); ++k) {
    Output o = Model::copy(model.run(samples[k]));
    if (k == 0) {
      all.type = o.type;
      all.shape = o.shape;
      all.shape[0] = 0;
    } else if (o.type != all.type || std::vector<int64_t>(o.shape.begin() + 1, o.shape.end()) !=
                                         std::vector<int64_t>(all.shape.begin() + 1, all.shape.end())) {
      throw ProbeError("RuntimeError", "outputs of different samples differ in shape or dtype");
    }
    all.shape[0] += o.shape.empty() ? 1 : o.shape[0];
    all.bytes.insert(all.bytes.end(), o.bytes.begin(), o.bytes.end());
  }
  return all;
}

void write_npy(const std::string& path, const Output& o) {
  DType d;
  if (!dtype_of(o.type, &d)) throw ProbeError("ValueError", "cannot save an output of " + dtype_name(o.type));
  std::string shape = "(";
  for (size_t i = 0; i < o.shape.size(); ++i) shape += std::to_string(o.shape[i]) + (o.shape.size() == 1 || i + 1 < o.shape.size() ? "," : "");
  shape += ")";
  std::string header = std::string("{'descr': '") + d.descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  size_t total = 10 + header.size() + 1;
  header += std::string((64 - total % 64) % 64, ' ') + "\n";
  std::string text = std::string("\x93NUMPY\x01\x00", 8);
  uint16_t len = uint16_t(header.size());
  text += char(len & 0xff);
  text += char(len >> 8);
  text += header;
  text.append(reinterpret_cast<const char*>(o.bytes.data()), o.bytes.size());
  write_file_atomic(path, text);
}

std::string compare_sampled(const std::vector<Kept>& kept, const Output& all) {
  if (kept.empty()) return "null";
  size_t per_sample = 1;
  for (size_t d = 1; d < all.shape.size(); ++d) per_sample *= size_t(all.shape[d]);
  size_t last = all.shape.empty() ? 1 : size_t(all.shape.back());
  if (all.shape.size() < 2) last = 1;
  DType d;
  dtype_of(all.type, &d);
  double max_diff = 0;
  int mismatches = 0;
  for (const auto& k : kept) {
    const uint8_t* ref = all.bytes.data() + k.sample * per_sample * d.itemsize;
    const uint8_t* out = k.out.bytes.data();
    size_t arg_ref = 0, arg_out = 0;
    for (size_t i = 0; i < per_sample; ++i) {
      double r = element(ref, all.type, i), o = element(out, k.out.type, i);
      max_diff = std::max(max_diff, std::fabs(o - r));
      if (i < last) {
        if (r > element(ref, all.type, arg_ref)) arg_ref = i;
        if (o > element(out, k.out.type, arg_out)) arg_out = i;
      }
    }
    mismatches += arg_ref != arg_out;
  }
  Obj o;
  o.set("checked", json_int(int64_t(kept.size())));
  o.set("argmax_mismatches", json_int(mismatches));
  o.set("max_abs_diff", json_num(max_diff, 9));
  return o.dump();
}

// ------------------------------------------------------------------ the probe

Obj session_json(int threads) {
  Obj s;
  s.set("device", json_str("CPU"));
  s.set("threads", threads > 0 ? json_int(threads) : "null");
  s.set("runner", json_str("native"));
  return s;
}

Obj run(const Args& a) {
  Obj result;
  result.set("schema", json_str(kSchema)).set("backend", json_str("executorch")).set("mode", json_str(a.mode));
  result.set("pid", json_int(getpid()));
  const char* modes[] = {"cold", "outputs", "full", "warm", "describe"};
  if (std::find_if(std::begin(modes), std::end(modes), [&](const char* m) { return a.mode == m; }) == std::end(modes))
    throw ProbeError("ValueError", "unknown mode " + json_str(a.mode) + "; expected cold, outputs, full, warm or describe");
  std::string device = a.device;
  std::transform(device.begin(), device.end(), device.begin(), ::toupper);
  if (device != "CPU") throw ProbeError("ValueError", "the native ExecuTorch runner runs on CPU; got device " + json_str(a.device));
  if (!a.options.empty()) throw ProbeError("ValueError", "executorch takes no runtime options; got " + a.options[0]);
  if (a.threads < 1) throw ProbeError("ValueError", "threads must be at least 1");
  // null without the parent's clock, as probe.py reports it
  std::string interpreter_ms = a.parent_start_wall_ns ? json_num(ms_between(a.parent_start_wall_ns, g_start_wall_ns)) : "null";

  // No import: the libraries were linked, loaded and initialized before main (interpreter_ms).
  int64_t t1 = mono_ns();
  executorch::runtime::runtime_init();
  // Set before the method loads: XNNPACK binds the process-wide thread pool then.
  auto* pool = executorch::extension::threadpool::get_threadpool();
  int threads = 0;
  if (pool && pool->_unsafe_reset_threadpool(uint32_t(a.threads))) threads = int(pool->get_thread_count());
  Model model(a.model);
  double read_ms = model.load_program();
  model.load_method();  // delegate init: XNNPACK builds its runtime here
  int64_t t2 = mono_ns();
  Obj session = session_json(threads);
  if (!threads) session.set("notes", json_str("the thread pool could not be resized; it keeps its default size"));
  result.set("runtime_version", json_str(EDGEDISTILL_EXECUTORCH_VERSION));
  if (a.mode == "describe") {
    Obj cold;
    cold.set("interpreter_ms", interpreter_ms).set("import_ms", json_num(0.0));
    cold.set("read_ms", json_num(read_ms)).set("compile_ms", json_num(ms_between(t1, t2) - read_ms));
    result.set("load", cold.dump());
    result.set("inputs", ports_json(model.inputs())).set("outputs", ports_json(model.outputs()));
    result.set("session", session.dump());
    return result;
  }

  if (a.inputs.empty()) throw ProbeError("UsageError", "--inputs is required in mode " + a.mode);
  std::vector<Input> inputs = read_inputs(a.inputs);
  check_inputs(model, inputs, a.batch);
  std::vector<Batch> batches = make_batches(inputs, a.batch);
  if (batches.empty()) throw ProbeError("ValueError", "fewer samples than batch size " + std::to_string(a.batch));
  int64_t t3 = mono_ns();
  Output first = Model::copy(model.run(batches[0]));
  int64_t t4 = mono_ns();

  Obj cold;
  cold.set("interpreter_ms", interpreter_ms);
  cold.set("import_ms", json_num(0.0));
  cold.set("import_note", json_str("native runner: nothing to import; the dynamic loader links the ExecuTorch "
                                   "libraries before main, inside interpreter_ms"));
  cold.set("read_ms", json_num(read_ms));
  cold.set("compile_ms", json_num(ms_between(t1, t2) - read_ms));
  cold.set("first_inference_ms", json_num(ms_between(t3, t4)));
  cold.set("rss_after_load_mb", json_num(status_mb("VmRSS"), 2));
  result.set("cold", cold.dump());
  Obj s = session;
  s.set("load_parts_ms", Obj().set("read_ms", json_num(read_ms)).set("compile_ms", json_num(ms_between(t1, t2) - read_ms)).dump());
  result.set("session", s.dump());
  result.set("first_output_shape", json_ints(first.shape));
  Partial partial{a.result_path + ".partial"};
  partial.save(result);  // the cold start is measured: kept even if what follows hangs

  Output outputs;
  if (a.mode == "full" || a.mode == "outputs") {
    std::vector<Batch> singles = a.batch == 1 ? std::move(batches) : make_batches(inputs, 1);
    if (a.outputs_path.empty()) throw ProbeError("UsageError", "--outputs-path is required in mode " + a.mode);
    outputs = all_outputs(model, singles);
    write_npy(a.outputs_path, outputs);
    result.set("outputs_path", json_str(a.outputs_path));
    batches = std::move(singles);
  }
  if (a.mode == "full") {
    std::vector<Kept> kept;
    Obj warm = warm_json(model, batches, a, kOutputSampleStride, &partial, &kept);
    same_input(model, batches, a, &warm);
    result.set("warm", warm.dump());
    result.set("sampled_outputs", compare_sampled(kept, outputs));
  } else if (a.mode == "warm") {
    Obj warm = warm_json(model, batches, a, 0, &partial, nullptr);
    if (a.same_input) same_input(model, batches, a, &warm);
    result.set("warm", warm.dump());
  }
  result.set("batch_size", json_int(a.mode == "full" || a.mode == "outputs" ? 1 : a.batch));
  result.set("peak_rss_mb", json_num(status_mb("VmHWM"), 2));
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  g_start_wall_ns = wall_ns();  // first thing: process start ends here
  std::string result_path;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == "--result-path") result_path = argv[i + 1];
  Obj result;
  bool ok = false;
  try {
    Args a = parse_args(argc, argv);
    result = run(a);
    result.set("ok", "true");
    ok = true;
  } catch (const ProbeError& e) {
    result = Obj();
    result.set("schema", json_str(kSchema)).set("ok", "false").set("error_type", json_str(e.type)).set("error", json_str(e.what()));
  } catch (const std::exception& e) {
    result = Obj();
    result.set("schema", json_str(kSchema)).set("ok", "false").set("error_type", json_str("RuntimeError")).set("error", json_str(e.what()));
  }
  if (result_path.empty()) {
    fprintf(stderr, "executorch_runner: %s\n", result.dump().c_str());
    return 2;
  }
  try {
    write_file_atomic(result_path, result.dump());  // the parent sees a whole result or none
  } catch (const std::exception& e) {
    fprintf(stderr, "executorch_runner: %s\n", e.what());
    return 2;
  }
  return ok ? 0 : 1;
}
