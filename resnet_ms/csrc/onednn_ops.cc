// CPU kernels for MindSpore's op plugin (MS_OP_PLUGIN_PATH): convolution through
// oneDNN's blocked-layout primitives (on 1x1 outputs, and the gradients on 2x2 ones, as
// matrix products), BatchNorm, max-pool and the momentum updates as plain loops over NCHW.
//
// Why: MindSpore 2.10's own CPU Conv2D kernels describe every tensor to oneDNN
// as plain NCHW, which leaves oneDNN only its slow gemm (or, at AVX-512, its
// reference) convolution. Here the primitives are created with format `any`,
// so oneDNN picks its fast blocked kernels; the tensors are reordered into
// and out of those layouts on each call (MindSpore's tensors stay NCHW).
//
// MindSpore routes ops to this library by primitive name, calling
//   int Name(int nparam, void **params, int *ndims, int64_t **shapes,
//            const char **dtypes, void *stream, void *extra)
// with the inputs, then the outputs, in the op's documented order. The
// library is linked against the oneDNN that MindSpore ships (libdnnl.so.3),
// built with the threadpool runtime: ThreadPool below supplies the threads.
//
// Exported ops (float32 only; anything else returns an error code, which
// MindSpore turns into an exception):
//   Conv2DExt        input, weight, bias|None, stride, padding, dilation, groups -> output
//   Convolution      input, weight, bias|None, stride, padding, dilation, transposed (false),
//                    output_padding, groups -> output   (output_padding: how much less the
//                    padding before each axis is than `padding`, the padding after it)
//   ConvolutionGrad  dout, input, weight, bias|None, stride, padding, dilation, transposed,
//                    output_padding, groups, output_mask -> dinput, dweight, dbias
//   BatchNormExt     x, weight, bias, running_mean, running_var, training, momentum, eps
//                    -> y, save_mean, save_invstd   (momentum as PyTorch's: new = (1-m) old + m batch)
//   BatchNormGradExt dy, x, weight, running_mean, running_var, save_mean, save_invstd,
//                    training, eps, output_mask -> dx, dweight, dbias
//   MaxPoolWithMask  x, kernel_size, strides, pads, dilation, ceil_mode, argmax_type -> y, mask
//   MaxPoolGradWithMask x, dy, mask, kernel_size, strides, pads, dilation, ceil_mode,
//                    argmax_type -> dx
//   ApplyMomentum    variable, accumulation, learning_rate, gradient, momentum -> variable
//   FusedWeightScaleApplyMomentum  weight_decay, loss_scale, then as ApplyMomentum
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "oneapi/dnnl/dnnl_threadpool.hpp"
#include "kernel/cpu/op_plugin/custom_kernel_input_info.h"  // MindSpore's, from its wheel

namespace {

using dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

// ---------------------------------------------------------------- threads

thread_local bool tl_in_parallel = false;

// How long a thread of the pool waits for work (or the caller for its workers) awake
// before it sleeps. 200 us: ResNet-18 b64 training 606-664 images/s without, 721-759
// at 200, 731-786 at 1000 and 5000, within the noise of each other (run 15); GNU OpenMP,
// PyTorch's, spins about as long by default. RESNET_MS_KERNEL_SPIN_US=0: sleep at once.
int SpinMicroseconds() {
  const char *env = std::getenv("RESNET_MS_KERNEL_SPIN_US");
  return env ? std::max(0, std::atoi(env)) : 200;
}

class ThreadPool : public dnnl::threadpool_interop::threadpool_iface {
 public:
  explicit ThreadPool(int n) : n_(n < 1 ? 1 : n) {
    for (int i = 1; i < n_; ++i) workers_.emplace_back([this] { Work(); });
  }
  ~ThreadPool() override {
    {
      std::lock_guard<std::mutex> lk(m_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto &t : workers_) t.join();
  }
  int get_num_threads() const override { return n_; }
  bool get_in_parallel() const override { return tl_in_parallel; }
  uint64_t get_flags() const override { return 0; }  // synchronous: parallel_for returns when done
  void wait() override {}                              // declared by newer headers; nothing is pending

  void parallel_for(int n, const std::function<void(int, int)> &fn) override {
    if (n <= 0) return;
    if (n == 1 || n_ == 1 || tl_in_parallel) {
      for (int i = 0; i < n; ++i) fn(i, n);
      return;
    }
    std::lock_guard<std::mutex> one_at_a_time(outer_);
    Job job{&fn, n};
    {
      std::lock_guard<std::mutex> lk(m_);
      job_ = &job;
      ++generation_;
    }
    wake_.notify_all();
    Run(&job);
    auto finished = [&] { return job.done.load() == n && active_.load() == 0; };
    Spin(finished);  // a worker finishing its part is often microseconds away
    std::unique_lock<std::mutex> lk(m_);
    done_.wait(lk, finished);  // under the lock: no worker can still be taking `job`
    job_ = nullptr;
  }

 private:
  struct Job {
    const std::function<void(int, int)> *fn;
    int n;
    std::atomic<int> next{0};
    std::atomic<int> done{0};
  };

  void Run(Job *job) {
    tl_in_parallel = true;
    for (int i = job->next.fetch_add(1); i < job->n; i = job->next.fetch_add(1)) {
      (*job->fn)(i, job->n);
      job->done.fetch_add(1);
    }
    tl_in_parallel = false;
  }

  // Waits up to spin_us_ for `ready`, without sleeping: a sleeping thread takes tens of
  // microseconds to wake, and a convolution call is a few parallel sections (reorders, the
  // primitive) of a few hundred microseconds each (run 15).
  template <typename Ready>
  void Spin(Ready ready) const {
    if (spin_us_ <= 0 || ready()) return;
    const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(spin_us_);
    do {
      for (int i = 0; i < 64; ++i) __builtin_ia32_pause();
      if (ready()) return;
    } while (std::chrono::steady_clock::now() < until);
  }

  void Work() {
    uint64_t seen = 0;
    for (;;) {
      Job *job;
      Spin([&] { return generation_.load() != seen; });
      {
        std::unique_lock<std::mutex> lk(m_);
        wake_.wait(lk, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        job = job_;
        if (job == nullptr) continue;
        ++active_;
      }
      Run(job);
      {
        std::lock_guard<std::mutex> lk(m_);
        --active_;
      }
      done_.notify_all();
    }
  }

  int n_;
  std::vector<std::thread> workers_;
  std::mutex m_, outer_;
  std::condition_variable wake_, done_;
  Job *job_ = nullptr;
  std::atomic<uint64_t> generation_{0};  // written under m_, read without it while spinning
  std::atomic<int> active_{0};
  bool stop_ = false;
  const int spin_us_ = SpinMicroseconds();
};

int ThreadCount() {
  if (const char *env = std::getenv("RESNET_MS_KERNEL_THREADS")) return std::max(1, std::atoi(env));
  unsigned n = std::thread::hardware_concurrency();
  return n ? static_cast<int>(n) : 1;
}

struct Context {
  Context() : pool(ThreadCount()), engine(dnnl::engine::kind::cpu, 0) {
    stream = dnnl::threadpool_interop::make_stream(engine, &pool);
  }
  ThreadPool pool;
  dnnl::engine engine;
  dnnl::stream stream;
  std::mutex lock;  // one op at a time: primitives and their buffers are shared
};

Context &Ctx() {
  static Context ctx;
  return ctx;
}

// ---------------------------------------------------------------- arguments

struct Args {
  int n;
  void **p;
  int *nd;
  int64_t **sh;
  const char **dtype;
  bool IsF32(int i) const { return std::strcmp(dtype[i], "float32") == 0; }
  bool IsNone(int i) const { return p[i] == nullptr || std::strcmp(dtype[i], "none") == 0; }
  float *F(int i) const { return static_cast<float *>(p[i]); }
  memory::dims Shape(int i) const { return memory::dims(sh[i], sh[i] + nd[i]); }
  // A tuple of ints (or one int for both axes).
  memory::dims Pair(int i) const {
    const int64_t *v = static_cast<const int64_t *>(p[i]);
    if (nd[i] == 0 || sh[i][0] == 1) return {v[0], v[0]};
    return {v[0], v[1]};
  }
  int64_t Int(int i) const { return *static_cast<const int64_t *>(p[i]); }
  bool Bool(int i) const { return *static_cast<const bool *>(p[i]); }
  double Real(int i) const {
    return std::strcmp(dtype[i], "float64") == 0 ? *static_cast<const double *>(p[i])
                                                  : *static_cast<const float *>(p[i]);
  }
  std::vector<int64_t> Ints(int i) const {
    const int64_t *v = static_cast<const int64_t *>(p[i]);
    return std::vector<int64_t>(v, v + (nd[i] ? sh[i][0] : 1));
  }
};

std::string Key(const char *op, const std::vector<memory::dims> &parts) {
  std::string k(op);
  for (const auto &d : parts) {
    k += '|';
    for (auto v : d) k += std::to_string(v) + ',';
  }
  return k;
}

// A tensor in MindSpore's plain layout, and the same in a primitive's layout
// (a buffer owned here), with the reorders between them.
struct Staged {
  memory::desc plain, inner;
  memory inner_mem, copy_mem;
  bool same = true;
  dnnl::reorder to_inner, to_plain;

  void Init(const memory::desc &plain_md, const memory::desc &inner_md, bool in, bool out) {
    auto &eng = Ctx().engine;
    plain = plain_md;
    inner = inner_md;
    same = plain_md == inner_md;
    if (same) return;
    inner_mem = memory(inner_md, eng);
    if (in) to_inner = dnnl::reorder(dnnl::reorder::primitive_desc(eng, plain_md, eng, inner_md));
    if (out) to_plain = dnnl::reorder(dnnl::reorder::primitive_desc(eng, inner_md, eng, plain_md));
  }
  // The memory the primitive reads; `data` is the plain tensor. MindSpore may give an
  // op's output the memory of an input it no longer needs (`aliased`): then the input
  // is always copied first, so that the primitive never reads what it is writing.
  memory In(void *data, bool aliased = false) {
    auto &c = Ctx();
    memory user(plain, c.engine, data);
    if (!same) {
      to_inner.execute(c.stream, user, inner_mem);
      return inner_mem;
    }
    if (!aliased) return user;
    if (!copy_mem) copy_mem = memory(plain, c.engine);
    std::memcpy(copy_mem.get_data_handle(), data, plain.get_size());
    return copy_mem;
  }
  // The memory the primitive writes; call Out() afterwards to copy it to `data`.
  memory Target(void *data) {
    return same ? memory(plain, Ctx().engine, data) : inner_mem;
  }
  void Out(void *data) {
    if (same) return;
    auto &c = Ctx();
    memory user(plain, c.engine, data);
    to_plain.execute(c.stream, inner_mem, user);
  }
};

// ---------------------------------------------------------------- convolution

struct ConvShape {
  memory::dims src, wei, dst, strides, dilates, pad_l, pad_r;
  bool bias;
};

struct Conv {
  dnnl::convolution_forward::primitive_desc fwd_pd;
  dnnl::convolution_forward fwd;
  Staged f_src, f_wei, f_dst;
  memory::desc bias_md;
  // backward, made on first use
  bool has_bwd = false, shared_ddst = false;  // shared: both gradients read dout in one layout
  dnnl::convolution_backward_data bwd_data;
  dnnl::convolution_backward_weights bwd_wei;
  Staged d_ddst, d_wei, d_dsrc, w_src, w_ddst, w_dwei;
};

std::map<std::string, std::unique_ptr<Conv>> &ConvCache() {
  static std::map<std::string, std::unique_ptr<Conv>> cache;
  return cache;
}

memory::desc Any(const memory::dims &d) { return memory::desc(d, dt::f32, tag::any); }
memory::desc Plain(const memory::dims &d) { return memory::desc(d, dt::f32, d.size() == 4 ? tag::abcd : tag::a); }

Conv &GetConv(const ConvShape &s) {
  auto key = Key("conv", {s.src, s.wei, s.dst, s.strides, s.dilates, s.pad_l, s.pad_r, {s.bias}});
  auto &cache = ConvCache();
  auto it = cache.find(key);
  if (it != cache.end()) return *it->second;
  auto c = std::make_unique<Conv>();
  auto &eng = Ctx().engine;
  c->bias_md = memory::desc({s.wei[0]}, dt::f32, tag::a);
  if (s.bias) {
    c->fwd_pd = dnnl::convolution_forward::primitive_desc(
        eng, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, Any(s.src), Any(s.wei),
        c->bias_md, Any(s.dst), s.strides, s.dilates, s.pad_l, s.pad_r);
  } else {
    c->fwd_pd = dnnl::convolution_forward::primitive_desc(
        eng, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, Any(s.src), Any(s.wei),
        Any(s.dst), s.strides, s.dilates, s.pad_l, s.pad_r);
  }
  c->fwd = dnnl::convolution_forward(c->fwd_pd);
  c->f_src.Init(Plain(s.src), c->fwd_pd.src_desc(), true, false);
  c->f_wei.Init(Plain(s.wei), c->fwd_pd.weights_desc(), true, false);
  c->f_dst.Init(Plain(s.dst), c->fwd_pd.dst_desc(), false, true);
  auto &ref = *c;
  cache.emplace(key, std::move(c));
  return ref;
}

void MakeBackward(Conv &c, const ConvShape &s) {
  auto &eng = Ctx().engine;
  dnnl::convolution_backward_data::primitive_desc bd(eng, dnnl::algorithm::convolution_direct, Any(s.src),
                                                      Any(s.wei), Any(s.dst), s.strides, s.dilates, s.pad_l,
                                                      s.pad_r, c.fwd_pd);
  c.bwd_data = dnnl::convolution_backward_data(bd);
  c.d_ddst.Init(Plain(s.dst), bd.diff_dst_desc(), true, false);
  c.d_wei.Init(Plain(s.wei), bd.weights_desc(), true, false);
  c.d_dsrc.Init(Plain(s.src), bd.diff_src_desc(), false, true);
  dnnl::convolution_backward_weights::primitive_desc bw(eng, dnnl::algorithm::convolution_direct, Any(s.src),
                                                         Any(s.wei), Any(s.dst), s.strides, s.dilates,
                                                         s.pad_l, s.pad_r, c.fwd_pd);
  c.bwd_wei = dnnl::convolution_backward_weights(bw);
  c.w_src.Init(Plain(s.src), bw.src_desc(), true, false);
  c.w_ddst.Init(Plain(s.dst), bw.diff_dst_desc(), true, false);
  c.w_dwei.Init(Plain(s.wei), bw.diff_weights_desc(), false, true);
  c.shared_ddst = bd.diff_dst_desc() == bw.diff_dst_desc();
  c.has_bwd = true;
}

// Shape of a convolution from its arguments: input at `x`, weight at `w`,
// output at `y`, then stride, padding, dilation at `first` .. first+2. `less`, when
// given, is the argument (Convolution's output_padding) that says by how much the
// padding before each axis falls short of `padding`, which is the padding after it:
// pad_mode='same' at stride 2 pads one pixel less above and to the left
// (layers.py). MindSpore infers the output shape from `padding` alone, as if
// symmetric, and that is the shape of the asymmetric convolution too.
bool ReadConv(const Args &a, int x, int w, int y, int bias, int first, ConvShape *s, int less = -1) {
  if (a.nd[x] != 4 || a.nd[w] != 4 || a.nd[y] != 4 || !a.IsF32(x) || !a.IsF32(w)) return false;
  s->src = a.Shape(x);
  s->wei = a.Shape(w);
  s->dst = a.Shape(y);
  s->strides = a.Pair(first);
  s->pad_l = s->pad_r = a.Pair(first + 1);
  if (less >= 0) {
    const auto short_by = a.Pair(less);
    for (int i = 0; i < 2; ++i) {
      if (short_by[i] < 0 || short_by[i] > s->pad_r[i]) return false;
      s->pad_l[i] -= short_by[i];
    }
  }
  auto d = a.Pair(first + 2);
  s->dilates = {d[0] - 1, d[1] - 1};
  s->bias = !a.IsNone(bias);
  return true;
}

void BiasGrad(const float *dout, const memory::dims &dst, float *db) {
  const int64_t n = dst[0], c = dst[1], hw = dst[2] * dst[3];
  Ctx().pool.parallel_for(static_cast<int>(c), [&](int k, int) {
    double s = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float *p = dout + (i * c + k) * hw;
      for (int64_t j = 0; j < hw; ++j) s += p[j];
    }
    db[k] = static_cast<float>(s);
  });
}

// ---------------------------------------------------------------- one output pixel

// A convolution with a 1x1 output (ResNet's last stages at 32 px: 3x3 kernels on
// 1x1 maps, stride-2 ones on 2x2 maps, 1x1 kernels on 1x1 maps) is one matrix product
// over the taps that fall on the input: y[n,o] = sum_k x[n,k] w[o,k]. oneDNN's direct
// kernels took 5-20x the time of that product on these shapes (benchmarks/RESULTS.md
// run 11), and its weight reorders cost as much again.
struct Pixel {
  int64_t n, c, h, w, o, kh, kw;
  int64_t u0, nu, v0, nv;  // the taps used: rows u0 .. u0+nu-1, columns v0 .. v0+nv-1
  int64_t r0, c0;          // the input pixel under tap (u0, v0)
  // The whole input lies under a part of the kernel (the stride-2 3x3 on 2x2 maps): it is
  // copied into a zero frame of the kernel's size rather than the weight cut to that part.
  // The weight is the larger (512 x 256 x 3x3 against 64 x 256 x 2x2 at batch 64), and
  // gathering its part cost more than the product's extra zeros (run 15).
  bool framed;
  int64_t K() const { return framed ? c * kh * kw : c * nu * nv; }
  bool whole_input() const { return !framed && r0 == 0 && c0 == 0 && nu == h && nv == w; }  // x is [n, K]
  bool whole_kernel() const { return framed || (nu == kh && nv == kw); }                   // w is [o, K]
};

// The product form of `s`, when its output is one pixel and every tap reads inside.
bool AsPixel(const ConvShape &s, Pixel *p) {
  if (s.dst[2] != 1 || s.dst[3] != 1 || s.dilates[0] || s.dilates[1]) return false;
  const int64_t h = s.src[2], w = s.src[3], kh = s.wei[2], kw = s.wei[3];
  const int64_t u0 = std::max<int64_t>(0, s.pad_l[0]), u1 = std::min(kh, s.pad_l[0] + h);
  const int64_t v0 = std::max<int64_t>(0, s.pad_l[1]), v1 = std::min(kw, s.pad_l[1] + w);
  if (u1 <= u0 || v1 <= v0) return false;
  *p = {s.src[0], s.src[1], h, w, s.wei[0], kh, kw, u0, u1 - u0, v0, v1 - v0, u0 - s.pad_l[0], v0 - s.pad_l[1],
        false};
  p->framed = !p->whole_kernel() && p->whole_input() && p->n * kh * kw <= p->o * p->nu * p->nv;
  return true;
}

// Copies between a [rows, c, h, w] tensor and its used window [rows, c*nu*nv]; `from`
// true reads the window out of the tensor, false writes it back (zeros elsewhere).
// Planes are shared among the threads: a 3x3 kernel's centre taps are one float in
// nine, so the copy is bound by memory, not arithmetic.
void Window(float *tensor, float *window, int64_t rows, int64_t c, int64_t h, int64_t w, int64_t r0, int64_t nu,
            int64_t c0, int64_t nv, bool from) {
  auto &pool = Ctx().pool;
  const int64_t planes = rows * c, parts = pool.get_num_threads();
  pool.parallel_for(static_cast<int>(parts), [&](int part, int) {
    const int64_t first = planes * part / parts, last = planes * (part + 1) / parts;
    if (!from) std::fill(tensor + first * h * w, tensor + last * h * w, 0.0f);
    for (int64_t i = first; i < last; ++i)
      for (int64_t u = 0; u < nu; ++u) {
        float *t = tensor + (i * h + r0 + u) * w + c0, *q = window + (i * nu + u) * nv;
        if (from)
          std::copy(t, t + nv, q);
        else
          std::copy(q, q + nv, t);
      }
  });
}

void Gemm(char ta, char tb, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda, const float *b,
          int64_t ldb, float *c, int64_t ldc) {
  auto status = dnnl::threadpool_interop::sgemm(ta, tb, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, ldc, &Ctx().pool);
  if (status != dnnl::status::success) throw std::runtime_error("sgemm failed");
}

struct Scratch {
  std::vector<float> x, w, y, dy;
  float *Get(std::vector<float> &v, int64_t size) {
    if (static_cast<int64_t>(v.size()) < size) v.resize(size);
    return v.data();
  }
};

Scratch &Buffers() {
  static Scratch s;
  return s;
}

// dout (ConvolutionGrad's input 0, `size` floats), copied first when dweight (output 12)
// lies where it does: MindSpore may give an output the memory of a same-sized input, and
// dweight is written before dinput reads dout.
const float *Dout(const Args &a, int64_t size) {
  if (a.p[12] != a.p[0]) return a.F(0);
  float *copy = Buffers().Get(Buffers().dy, size);
  std::memcpy(copy, a.F(0), sizeof(float) * size);
  return copy;
}

// x as [n, K]: the input itself, or its window copied (also when `copy`: the output
// will be written where it lies).
const float *PixelInput(const Pixel &p, float *x, bool copy) {
  if (p.whole_input() && !copy) return x;
  float *buf = Buffers().Get(Buffers().x, p.n * p.K());
  if (p.framed)
    Window(buf, x, p.n, p.c, p.kh, p.kw, p.u0, p.nu, p.v0, p.nv, false);
  else if (p.whole_input())
    std::memcpy(buf, x, sizeof(float) * p.n * p.K());
  else
    Window(x, buf, p.n, p.c, p.h, p.w, p.r0, p.nu, p.c0, p.nv, true);
  return buf;
}

const float *PixelWeight(const Pixel &p, float *w) {
  if (p.whole_kernel()) return w;
  float *buf = Buffers().Get(Buffers().w, p.o * p.K());
  Window(w, buf, p.o, p.c, p.kh, p.kw, p.u0, p.nu, p.v0, p.nv, true);
  return buf;
}

// input, weight, bias at 0-2, the output at `out`
void PixelForward(const Args &a, const Pixel &p, bool bias, int out) {
  const float *x = PixelInput(p, a.F(0), a.p[0] == a.p[out]), *w = PixelWeight(p, a.F(1));
  float *y = a.F(out);
  Gemm('N', 'T', p.n, p.o, p.K(), x, p.K(), w, p.K(), y, p.o);
  if (!bias) return;
  const float *b = a.F(2);
  for (int64_t i = 0; i < p.n; ++i)
    for (int64_t j = 0; j < p.o; ++j) y[i * p.o + j] += b[j];
}

// dweight = dout^T x, then dinput = dout w (last: it may lie where dout does).
void PixelBackward(const Args &a, const Pixel &p, bool want_dx, bool want_dw) {
  const float *dy = Dout(a, p.n * p.o);
  const int64_t K = p.K();
  if (want_dw) {
    const float *x = PixelInput(p, a.F(1), false);
    const bool direct = p.whole_kernel() && a.p[12] != a.p[1];
    float *dw = direct ? a.F(12) : Buffers().Get(Buffers().w, p.o * K);
    Gemm('T', 'N', p.o, K, p.n, dy, p.o, x, K, dw, K);
    if (p.whole_kernel() && !direct)
      std::memcpy(a.F(12), dw, sizeof(float) * p.o * K);
    else if (!direct)
      Window(a.F(12), dw, p.o, p.c, p.kh, p.kw, p.u0, p.nu, p.v0, p.nv, false);
  }
  if (!want_dx) return;
  const float *w = PixelWeight(p, a.F(2));
  const bool direct = p.whole_input() && a.p[11] != dy;
  float *dx = direct ? a.F(11) : Buffers().Get(Buffers().y, p.n * K);
  Gemm('N', 'N', p.n, K, p.o, dy, p.o, w, K, dx, K);
  if (direct) return;
  if (p.framed)
    Window(dx, a.F(11), p.n, p.c, p.kh, p.kw, p.u0, p.nu, p.v0, p.nv, true);
  else if (p.whole_input())
    std::memcpy(a.F(11), dx, sizeof(float) * p.n * K);
  else
    Window(a.F(11), dx, p.n, p.c, p.h, p.w, p.r0, p.nu, p.c0, p.nv, false);
}

// ---------------------------------------------------------------- small maps

// A convolution whose input is no larger than its kernel and whose output has a few
// pixels (a 3x3 convolution on 2x2 maps: ResNet's third stage at 32 px) is one matrix
// product with the convolution written out as a matrix M: y[n, (o,i,j)] =
// sum over (c,p,q) of x[n, (c,p,q)] M[(o,i,j), (c,p,q)], M holding the weight of the tap
// that joins input pixel (p,q) to output pixel (i,j), or 0. Both tensors are NCHW as
// they lie. At 2x2 that is 4/9 of the direct convolution's multiply-adds, and oneDNN's
// gradients took 1.5-2x its forward's time on these shapes (RESULTS.md run 11). The
// gradients only: the forward, on oneDNN, took 0.70x the product's time at batch 64 and
// as long at 128 (ResNet-18, run 15): M is made anew at every call.
struct Small {
  int64_t n, c, h, w, o, oh, ow, kh, kw, sh, sw, ph, pw;
  int64_t In() const { return c * h * w; }
  int64_t Out() const { return o * oh * ow; }
  // The tap joining input (p,q) to output (i,j), or -1 if none does.
  int64_t Tap(int64_t i, int64_t j, int64_t p, int64_t q) const {
    const int64_t u = p - i * sh + ph, v = q - j * sw + pw;
    return u >= 0 && u < kh && v >= 0 && v < kw ? u * kw + v : -1;
  }
};

const int64_t kSmallPixels = 4;  // outputs up to 2x2; beyond, M grows faster than it saves

bool AsSmall(const ConvShape &s, Small *m) {
  const int64_t oh = s.dst[2], ow = s.dst[3], h = s.src[2], w = s.src[3], kh = s.wei[2], kw = s.wei[3];
  if (oh * ow > kSmallPixels || h * w > kh * kw || s.dilates[0] || s.dilates[1]) return false;
  *m = {s.src[0], s.src[1], h, w, s.wei[0], oh, ow, kh, kw, s.strides[0], s.strides[1], s.pad_l[0], s.pad_l[1]};
  return true;
}

// M from the weight (`to_matrix`), or the weight's gradient folded from M's (each tap
// summed over the pixel pairs it joins). Output channels are shared among the threads;
// per (output, input channel) pair its kh x kw taps and its block of M are close in memory.
void Operator(const Small &m, float *weight, float *matrix, bool to_matrix) {
  const int64_t taps = m.kh * m.kw, in = m.In(), cols = m.h * m.w, pixels = m.oh * m.ow;
  std::vector<int64_t> tap(pixels * cols);  // tap[(i,j), (p,q)]
  for (int64_t ij = 0; ij < pixels; ++ij)
    for (int64_t pq = 0; pq < cols; ++pq) tap[ij * cols + pq] = m.Tap(ij / m.ow, ij % m.ow, pq / m.w, pq % m.w);
  Ctx().pool.parallel_for(static_cast<int>(m.o), [&](int o, int) {
    float *wo = weight + o * m.c * taps, *rows = matrix + o * pixels * in;
    if (!to_matrix) std::fill(wo, wo + m.c * taps, 0.0f);
    for (int64_t c = 0; c < m.c; ++c) {
      float *w = wo + c * taps;
      for (int64_t ij = 0; ij < pixels; ++ij) {
        float *cell = rows + ij * in + c * cols;
        const int64_t *t = tap.data() + ij * cols;
        for (int64_t pq = 0; pq < cols; ++pq) {
          if (to_matrix)
            cell[pq] = t[pq] < 0 ? 0.0f : w[t[pq]];
          else if (t[pq] >= 0)
            w[t[pq]] += cell[pq];
        }
      }
    }
  });
}

// dweight from dM = dout^T x, then dinput = dout M (last: it may lie where dout does).
void SmallBackward(const Args &a, const Small &m, bool want_dx, bool want_dw) {
  const int64_t in = m.In(), out = m.Out();
  const float *dy = Dout(a, m.n * out);
  float *matrix = Buffers().Get(Buffers().w, out * in);
  if (want_dw) {
    Gemm('T', 'N', out, in, m.n, dy, out, a.F(1), in, matrix, in);
    Operator(m, a.F(12), matrix, false);
  }
  if (!want_dx) return;
  Operator(m, a.F(2), matrix, true);
  const bool direct = a.p[11] != dy;
  float *dx = direct ? a.F(11) : Buffers().Get(Buffers().y, m.n * in);
  Gemm('N', 'N', m.n, in, out, dy, out, matrix, in, dx, in);
  if (!direct) std::memcpy(a.F(11), dx, sizeof(float) * m.n * in);
}

// RESNET_MS_ONEDNN_ONLY=1: these too on oneDNN's kernels (to measure what the products save)
const bool kPixelOff = std::getenv("RESNET_MS_ONEDNN_ONLY") != nullptr;

// input, weight, bias at 0-2, the output at `out`
int ConvForward(const Args &a, const ConvShape &s, int out) {
  Pixel px;
  if (!kPixelOff && AsPixel(s, &px)) {
    PixelForward(a, px, s.bias, out);
    return 0;
  }
  auto &ctx = Ctx();
  Conv &c = GetConv(s);
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, c.f_src.In(a.p[0], a.p[0] == a.p[out])},
                                       {DNNL_ARG_WEIGHTS, c.f_wei.In(a.p[1])},
                                       {DNNL_ARG_DST, c.f_dst.Target(a.p[out])}};
  if (s.bias) args.emplace(DNNL_ARG_BIAS, memory(c.bias_md, ctx.engine, a.p[2]));
  c.fwd.execute(ctx.stream, args);
  c.f_dst.Out(a.p[out]);
  return 0;
}

// Conv2DExt: input, weight, bias, stride, padding, dilation, groups -> output
int Conv2DForward(const Args &a) {
  ConvShape s;
  if (a.n != 8 || a.Int(6) != 1 || !ReadConv(a, 0, 1, 7, 2, 3, &s)) return 1;
  return ConvForward(a, s, 7);
}

// Convolution: input, weight, bias, stride, padding, dilation, transposed, output_padding,
// groups -> output
int ConvolutionForward(const Args &a) {
  ConvShape s;
  if (a.n != 10 || a.Bool(6) || a.Int(8) != 1 || !ReadConv(a, 0, 1, 9, 2, 3, &s, 7)) return 1;
  return ConvForward(a, s, 9);
}

// ConvolutionGrad (of both): output_padding is Convolution's padding shortfall (Conv2DExt's is 0).
int ConvBackward(const Args &a) {
  ConvShape s;
  if (a.n != 14 || a.Bool(7) || a.Int(9) != 1 || !ReadConv(a, 1, 2, 0, 3, 4, &s, 8)) return 1;
  auto mask = a.Ints(10);
  const bool want_dx = mask.size() > 0 && mask[0], want_dw = mask.size() > 1 && mask[1];
  // dbias before dinput overwrites dout where they share memory. Without a bias there is
  // no dbias to write (MindSpore may give it no memory).
  if (mask.size() > 2 && mask[2] && s.bias && a.p[13] != nullptr) BiasGrad(a.F(0), s.dst, a.F(13));
  Pixel px;
  Small sm;
  if (!kPixelOff && AsPixel(s, &px)) {
    PixelBackward(a, px, want_dx, want_dw);
    return 0;
  }
  if (!kPixelOff && AsSmall(s, &sm)) {
    SmallBackward(a, sm, want_dx, want_dw);
    return 0;
  }
  auto &ctx = Ctx();
  Conv &c = GetConv(s);
  if (!c.has_bwd) MakeBackward(c, s);
  // dout in the gradients' layout, reordered once when both read the same one. Weights
  // first: dinput may share memory with dout (same shape), and is written last; a
  // reordered (or copied) dout no longer lives there.
  memory ddst = want_dw ? c.w_ddst.In(a.p[0], want_dx && a.p[0] == a.p[11]) : memory();
  if (want_dw) {
    c.bwd_wei.execute(ctx.stream, {{DNNL_ARG_SRC, c.w_src.In(a.p[1])},
                                   {DNNL_ARG_DIFF_DST, ddst},
                                   {DNNL_ARG_DIFF_WEIGHTS, c.w_dwei.Target(a.p[12])}});
    c.w_dwei.Out(a.p[12]);
  }
  if (want_dx) {
    if (!want_dw || !c.shared_ddst) ddst = c.d_ddst.In(a.p[0], a.p[0] == a.p[11]);
    c.bwd_data.execute(ctx.stream, {{DNNL_ARG_DIFF_DST, ddst},
                                    {DNNL_ARG_WEIGHTS, c.d_wei.In(a.p[2])},
                                    {DNNL_ARG_DIFF_SRC, c.d_dsrc.Target(a.p[11])}});
    c.d_dsrc.Out(a.p[11]);
  }
  return 0;
}

// ---------------------------------------------------------------- batch normalisation

// Statistics per channel over N x H x W of an NCHW tensor. Each thread takes a
// contiguous range of channels and walks the samples in memory order (sample, then its
// channels in the range): on small maps (1x1 to 4x4, ResNet's last stages at 32 px) a
// walk per channel touched a cache line for a few floats at every sample.
template <typename F>
void ChannelRanges(int64_t c, F body) {
  auto &pool = Ctx().pool;
  const int64_t parts = std::min<int64_t>(pool.get_num_threads(), c);
  pool.parallel_for(static_cast<int>(parts), [&](int part, int) { body(c * part / parts, c * (part + 1) / parts); });
}

struct Planes {  // an NCHW tensor's geometry: n samples of c planes of hw values
  int64_t n, c, hw;
  explicit Planes(const memory::dims &shape) : n(shape[0]), c(shape[1]), hw(1) {
    for (size_t i = 2; i < shape.size(); ++i) hw *= shape[i];
  }
  int64_t At(int64_t i, int64_t k) const { return (i * c + k) * hw; }
  // Planes this small (ResNet's 8x8 to 1x1 maps at 32 px) are walked as one row per
  // sample over a thread's channels, each channel's value spread over its plane, and the
  // sums kept per position of the row: a loop per plane of 1-64 values pays its overhead
  // per plane, and its running float sum does not vectorise. ResNet-50 b64, per call:
  // 2048 channels on 1x1 0.19 -> 0.10 ms forward, 0.31 -> 0.15 backward; 512 on 4x4
  // 0.48 -> 0.35, 0.59 -> 0.45; 256 on 8x8 0.96 -> 0.71, 0.98 -> 0.87 (run 16).
  bool Small() const { return hw <= 64; }
};

// Per-channel values of channels k0..k1 spread over their planes: a row of (k1-k0)*hw.
std::vector<float> Spread(const std::vector<float> &per_channel, int64_t hw) {
  std::vector<float> row(per_channel.size() * hw);
  for (size_t k = 0; k < per_channel.size(); ++k) std::fill(row.begin() + k * hw, row.begin() + (k + 1) * hw, per_channel[k]);
  return row;
}

// Training statistics of small planes: sums of x - (the channel's first value) and of
// its square, per position of the row, over the samples in double; then per channel.
void SmallSums(const Planes &t, int64_t k0, int64_t k1, const float *x, std::vector<double> &s,
               std::vector<double> &ss) {
  const int64_t len = (k1 - k0) * t.hw;
  std::vector<float> first(k1 - k0);
  for (int64_t k = k0; k < k1; ++k) first[k - k0] = x[t.At(0, k)];
  const std::vector<float> shift = Spread(first, t.hw);
  std::vector<double> s1(len), s2(len);
  for (int64_t i = 0; i < t.n; ++i) {
    const float *p = x + t.At(i, k0);
    for (int64_t e = 0; e < len; ++e) {
      const float d = p[e] - shift[e];
      s1[e] += d;
      s2[e] += d * d;
    }
  }
  for (int64_t e = 0; e < len; ++e) {
    s[e / t.hw] += s1[e];
    ss[e / t.hw] += s2[e];
  }
}

int BatchNormForward(const Args &a) {
  if (a.n != 11 || a.nd[0] < 2 || !a.IsF32(0)) return 1;
  const Planes t(a.Shape(0));
  const bool training = a.Bool(5);
  const double momentum = a.Real(6), eps = a.Real(7);
  const float *x = a.F(0), *w = a.IsNone(1) ? nullptr : a.F(1), *b = a.IsNone(2) ? nullptr : a.F(2);
  float *rm = a.F(3), *rv = a.F(4), *y = a.F(8), *save_mean = a.F(9), *save_invstd = a.F(10);
  const int64_t m = t.n * t.hw;
  ChannelRanges(t.c, [&](int64_t k0, int64_t k1) {
    // One pass over the data, shifted by each channel's first value so that the
    // variance does not cancel; float sums per plane, planes add up in double.
    std::vector<double> s(k1 - k0), ss(k1 - k0);
    std::vector<float> scale(k1 - k0), offset(k1 - k0);
    if (training && t.Small())
      SmallSums(t, k0, k1, x, s, ss);
    else if (training)
      for (int64_t i = 0; i < t.n; ++i)
        for (int64_t k = k0; k < k1; ++k) {
          const float *p = x + t.At(i, k), first = x[t.At(0, k)];
          float s1 = 0, s2 = 0;
          for (int64_t j = 0; j < t.hw; ++j) {
            const float d = p[j] - first;
            s1 += d;
            s2 += d * d;
          }
          s[k - k0] += s1;
          ss[k - k0] += s2;
        }
    for (int64_t k = k0; k < k1; ++k) {
      double mean = rm[k], var = rv[k];
      if (training) {
        const double dm = s[k - k0] / m;
        mean = x[t.At(0, k)] + dm;
        var = std::max(ss[k - k0] / m - dm * dm, 0.0);
        rm[k] = static_cast<float>((1 - momentum) * rm[k] + momentum * mean);
        const double unbiased = m > 1 ? var * m / (m - 1) : var;
        rv[k] = static_cast<float>((1 - momentum) * rv[k] + momentum * unbiased);
      }
      const double invstd = 1.0 / std::sqrt(var + eps), gamma = w ? w[k] : 1.0;
      save_mean[k] = static_cast<float>(mean);
      save_invstd[k] = static_cast<float>(invstd);
      scale[k - k0] = static_cast<float>(gamma * invstd);
      offset[k - k0] = static_cast<float>((b ? b[k] : 0.0) - mean * gamma * invstd);
    }
    if (t.Small()) {
      const std::vector<float> g = Spread(scale, t.hw), o = Spread(offset, t.hw);
      const int64_t len = (k1 - k0) * t.hw;
      for (int64_t i = 0; i < t.n; ++i) {
        const float *p = x + t.At(i, k0);
        float *q = y + t.At(i, k0);
        for (int64_t e = 0; e < len; ++e) q[e] = p[e] * g[e] + o[e];
      }
      return;
    }
    for (int64_t i = 0; i < t.n; ++i)
      for (int64_t k = k0; k < k1; ++k) {
        const float *p = x + t.At(i, k), g = scale[k - k0], o = offset[k - k0];
        float *q = y + t.At(i, k);
        for (int64_t j = 0; j < t.hw; ++j) q[j] = p[j] * g + o;
      }
  });
  return 0;
}

int BatchNormBackward(const Args &a) {
  if (a.n != 13 || a.nd[0] < 2 || !a.IsF32(0)) return 1;
  const Planes t(a.Shape(0));
  const bool training = a.Bool(7);
  const double eps = a.Real(8);
  auto mask = a.Ints(9);
  const float *dy = a.F(0), *x = a.F(1), *w = a.IsNone(2) ? nullptr : a.F(2);
  const float *rm = a.F(3), *rv = a.F(4), *save_mean = a.F(5), *save_invstd = a.F(6);
  float *dx = a.F(10), *dw = a.F(11), *db = a.F(12);
  const bool want_dx = !mask.empty() && mask[0] && dx;
  const int64_t m = t.n * t.hw;
  ChannelRanges(t.c, [&](int64_t k0, int64_t k1) {
    std::vector<double> sum_dy(k1 - k0), sum_dy_xc(k1 - k0);  // sum(dy), sum(dy * (x - mean))
    std::vector<float> mu(k1 - k0), a1(k1 - k0), a2(k1 - k0), a3(k1 - k0);
    for (int64_t k = k0; k < k1; ++k) mu[k - k0] = training ? save_mean[k] : rm[k];
    const int64_t len = (k1 - k0) * t.hw;
    const std::vector<float> centres = t.Small() ? Spread(mu, t.hw) : std::vector<float>();
    if (t.Small()) {
      std::vector<double> s1(len), s2(len);
      for (int64_t i = 0; i < t.n; ++i) {
        const float *g = dy + t.At(i, k0), *p = x + t.At(i, k0);
        for (int64_t e = 0; e < len; ++e) {
          s1[e] += g[e];
          s2[e] += g[e] * (p[e] - centres[e]);
        }
      }
      for (int64_t e = 0; e < len; ++e) {
        sum_dy[e / t.hw] += s1[e];
        sum_dy_xc[e / t.hw] += s2[e];
      }
    } else {
      for (int64_t i = 0; i < t.n; ++i)
        for (int64_t k = k0; k < k1; ++k) {
          const float *g = dy + t.At(i, k), *p = x + t.At(i, k), centre = mu[k - k0];
          float s1 = 0, s2 = 0;
          for (int64_t j = 0; j < t.hw; ++j) {
            s1 += g[j];
            s2 += g[j] * (p[j] - centre);
          }
          sum_dy[k - k0] += s1;
          sum_dy_xc[k - k0] += s2;
        }
    }
    for (int64_t k = k0; k < k1; ++k) {
      const double invstd = training ? save_invstd[k] : 1.0 / std::sqrt(rv[k] + eps), gamma = w ? w[k] : 1.0;
      if (mask.size() > 1 && mask[1] && dw) dw[k] = static_cast<float>(sum_dy_xc[k - k0] * invstd);
      if (mask.size() > 2 && mask[2] && db) db[k] = static_cast<float>(sum_dy[k - k0]);
      // dx = gamma * invstd * (dy - mean(dy) - (x - mean) * invstd^2 * mean(dy * (x - mean)));
      // with the running statistics (not training) they are constants: dx = dy * gamma * invstd
      a1[k - k0] = static_cast<float>(gamma * invstd);
      a2[k - k0] = training ? static_cast<float>(sum_dy[k - k0] / m) : 0.0f;
      a3[k - k0] = training ? static_cast<float>(invstd * invstd * sum_dy_xc[k - k0] / m) : 0.0f;
    }
    if (!want_dx) return;
    if (t.Small()) {
      const std::vector<float> c1 = Spread(a1, t.hw), c2 = Spread(a2, t.hw), c3 = Spread(a3, t.hw);
      for (int64_t i = 0; i < t.n; ++i) {
        const float *g = dy + t.At(i, k0), *p = x + t.At(i, k0);
        float *q = dx + t.At(i, k0);
        for (int64_t e = 0; e < len; ++e) q[e] = c1[e] * (g[e] - c2[e] - (p[e] - centres[e]) * c3[e]);
      }
      return;
    }
    for (int64_t i = 0; i < t.n; ++i)
      for (int64_t k = k0; k < k1; ++k) {
        const float *g = dy + t.At(i, k), *p = x + t.At(i, k);
        const float c1 = a1[k - k0], c2 = a2[k - k0], c3 = a3[k - k0], centre = mu[k - k0];
        float *q = dx + t.At(i, k);
        for (int64_t j = 0; j < t.hw; ++j) q[j] = c1 * (g[j] - c2 - (p[j] - centre) * c3);
      }
  });
  return 0;
}

// ---------------------------------------------------------------- max-pool

// MindSpore's own CPU max-pool gradient is slow (about 0.3 s of the 0.48 s a resnet_hour
// step at batch 256 spent outside these kernels, benchmarks/RESULTS.md run 7), and its
// forward runs on one thread; `mint.nn.functional.max_pool2d` compiles to these two ops,
// which MindSpore has no CPU kernel for. No dilation; padding (symmetric) is left out of
// the windows, as -inf would be; the output's size is MindSpore's (floor or ceil mode),
// read from the output's shape. The gradient finds each window's maximum again in x (the
// first one on ties, as the forward's index says), so it does not depend on how the mask
// output is laid out.
struct PoolShape {
  int64_t planes, h, w, oh, ow, kh, kw, sh, sw, ph, pw;
};

// x at `x`, kernel_size, strides, pads, dilation at `first` .., the output (or its
// gradient) at `y`.
bool ReadPool(const Args &a, int x, int first, int y, PoolShape *s) {
  if (a.nd[x] != 4 || a.nd[y] != 4 || !a.IsF32(x)) return false;
  const auto k = a.Pair(first), st = a.Pair(first + 1), pad = a.Pair(first + 2), dil = a.Pair(first + 3);
  if (dil[0] != 1 || dil[1] != 1 || pad[0] < 0 || pad[1] < 0 || pad[0] >= k[0] || pad[1] >= k[1]) return false;
  const auto d = a.Shape(x), o = a.Shape(y);
  *s = {d[0] * d[1], d[2], d[3], o[2], o[3], k[0], k[1], st[0], st[1], pad[0], pad[1]};
  // every window starts inside the input or its padding, and holds a pixel of it
  return s->oh > 0 && s->ow > 0 && (s->oh - 1) * s->sh < s->h + s->ph && (s->ow - 1) * s->sw < s->w + s->pw;
}

// Offset in the plane of the first maximum of output pixel (i, j)'s window. Selects, not
// branches: which pixel wins is data, and mispredicted branches made the stem's 3x3 pool
// gradient 3.0 ms at batch 64, MindSpore's 1.6 (run 15).
inline int64_t ArgMax(const float *plane, const PoolShape &s, int64_t i, int64_t j) {
  const int64_t u0 = std::max<int64_t>(0, i * s.sh - s.ph), u1 = std::min(s.h, i * s.sh - s.ph + s.kh);
  const int64_t v0 = std::max<int64_t>(0, j * s.sw - s.pw), v1 = std::min(s.w, j * s.sw - s.pw + s.kw);
  int64_t best = u0 * s.w + v0;
  float top = plane[best];
  for (int64_t u = u0; u < u1; ++u)
    for (int64_t v = v0; v < v1; ++v) {
      const int64_t at = u * s.w + v;
      const bool more = plane[at] > top;
      top = more ? plane[at] : top;
      best = more ? at : best;
    }
  return best;
}

// The maximum of output pixel (i, j)'s window (the forward's: no index wanted).
inline float Max(const float *plane, const PoolShape &s, int64_t i, int64_t j) {
  const int64_t u0 = std::max<int64_t>(0, i * s.sh - s.ph), u1 = std::min(s.h, i * s.sh - s.ph + s.kh);
  const int64_t v0 = std::max<int64_t>(0, j * s.sw - s.pw), v1 = std::min(s.w, j * s.sw - s.pw + s.kw);
  float top = plane[u0 * s.w + v0];
  for (int64_t u = u0; u < u1; ++u)
    for (int64_t v = v0; v < v1; ++v) top = std::max(top, plane[u * s.w + v]);
  return top;
}

// The 2x2 stride-2 case of the gradient: each window's four pixels get the output
// gradient or 0, the first maximum winning ties (as ArgMax); rows and columns that no
// window covers (odd sizes) get 0.
void Pool2x2Backward(const float *x, const float *g, float *dx, const PoolShape &s) {
  for (int64_t i = 0; i < s.oh; ++i) {
    const float *r0 = x + 2 * i * s.w, *r1 = r0 + s.w;
    float *d0 = dx + 2 * i * s.w, *d1 = d0 + s.w;
    for (int64_t j = 0; j < s.ow; ++j) {
      const float a = r0[2 * j], b = r0[2 * j + 1], c = r1[2 * j], d = r1[2 * j + 1], v = g[i * s.ow + j];
      const float m = std::max(std::max(a, b), std::max(c, d));
      const bool pa = a == m, pb = !pa && b == m, pc = !pa && !pb && c == m, pd = !pa && !pb && !pc;
      d0[2 * j] = pa ? v : 0.0f;
      d0[2 * j + 1] = pb ? v : 0.0f;
      d1[2 * j] = pc ? v : 0.0f;
      d1[2 * j + 1] = pd ? v : 0.0f;
    }
    if (s.w > 2 * s.ow) d0[s.w - 1] = d1[s.w - 1] = 0.0f;
  }
  if (s.h > 2 * s.oh) std::fill(dx + (s.h - 1) * s.w, dx + s.h * s.w, 0.0f);
}

// MaxPoolWithMask: x, kernel_size, strides, pads, dilation, ceil_mode, argmax_type -> y, mask
int MaxPoolForward(const Args &a) {
  PoolShape s;
  if (a.n != 9 || !ReadPool(a, 0, 1, 7, &s)) return 1;
  const float *x = a.F(0);
  float *y = a.F(7);
  // The mask (an Ascend-style bitmask on CPU too) is left unwritten: the gradient below
  // reads x instead, and nothing else reads it.
  Ctx().pool.parallel_for(static_cast<int>(s.planes), [&](int p, int) {
    const float *plane = x + p * s.h * s.w;
    for (int64_t i = 0; i < s.oh; ++i)
      for (int64_t j = 0; j < s.ow; ++j) y[(p * s.oh + i) * s.ow + j] = Max(plane, s, i, j);
  });
  return 0;
}

// MaxPoolGradWithMask: x, dy, mask, kernel_size, strides, pads, dilation, ceil_mode, argmax_type -> dx
int MaxPoolBackward(const Args &a) {
  PoolShape s;
  if (a.n != 10 || !ReadPool(a, 0, 3, 1, &s) || !a.IsF32(1)) return 1;
  const float *x = a.F(0), *dy = a.F(1);
  float *dx = a.F(9);
  const bool two = s.kh == 2 && s.kw == 2 && s.sh == 2 && s.sw == 2 && s.ph == 0 && s.pw == 0 &&
                   2 * s.oh <= s.h && 2 * s.ow <= s.w;
  Ctx().pool.parallel_for(static_cast<int>(s.planes), [&](int p, int) {
    const float *plane = x + p * s.h * s.w, *g = dy + p * s.oh * s.ow;
    float *out = dx + p * s.h * s.w;
    if (two) {  // SmallResNet's pools: every pixel of dx written once, no scatter
      Pool2x2Backward(plane, g, out, s);
      return;
    }
    std::fill(out, out + s.h * s.w, 0.0f);
    for (int64_t i = 0; i < s.oh; ++i)
      for (int64_t j = 0; j < s.ow; ++j) out[ArgMax(plane, s, i, j)] += g[i * s.ow + j];
  });
  return 0;
}

// ---------------------------------------------------------------- SGD with momentum

// ApplyMomentum, nn.Momentum's update, one call per parameter: MindSpore's own runs on
// the one operator thread (runtime.operator_threads), 13 of ResNet-18's 27 ms optimizer
// step; this one uses both threads and makes one pass. As MindSpore's CPU kernel:
// accumulation = accumulation * momentum + gradient; variable -= lr * accumulation (its
// use_nesterov flag is ignored there too); the output is the variable's new value.
int64_t Size(const Args &a, int i) {
  int64_t size = 1;
  for (int d = 0; d < a.nd[i]; ++d) size *= a.sh[i][d];
  return size;
}

// The update of `size` values, with gradient = (weight_decay * variable + gradient) *
// scale first when decay or scale are given. Built without fused multiply-adds
// (fp-contract=off): each product and sum rounds as MindSpore's separate Mul, AddN and
// ApplyMomentum do, so a run gives the same weights on either optimizer.
__attribute__((optimize("fp-contract=off"))) void Momentum(float *var, float *acc, const float *grad, float *out,
                                                            int64_t size, float lr, float momentum,
                                                            const float *decay, const float *scale) {
  auto &pool = Ctx().pool;
  const int64_t parts = size < 65536 ? 1 : pool.get_num_threads();  // small ones: not worth a wake-up
  // The scalars as values in the loop: read through a reference or pointer, each store to
  // var or acc could change them, and the loop would reload them and not vectorise.
  const bool decayed = decay != nullptr, scaled = scale != nullptr;
  const float d = decayed ? *decay : 0.0f, c = scaled ? *scale : 1.0f;
  pool.parallel_for(static_cast<int>(parts), [=](int part, int) {
    for (int64_t i = size * part / parts, last = size * (part + 1) / parts; i < last; ++i) {
      float g = grad[i];
      if (decayed) g = var[i] * d + g;
      if (scaled) g = g * c;
      acc[i] = acc[i] * momentum + g;
      var[i] -= lr * acc[i];
      out[i] = var[i];
    }
  });
}

bool SameSizes(const Args &a, std::initializer_list<int> tensors, std::initializer_list<int> scalars) {
  const int64_t size = Size(a, *tensors.begin());
  for (int i : tensors)
    if (!a.IsF32(i) || Size(a, i) != size) return false;
  for (int i : scalars)
    if (Size(a, i) != 1) return false;
  return true;
}

// ApplyMomentum: variable, accumulation, learning_rate, gradient, momentum -> variable
int MomentumStep(const Args &a) {
  if (a.n != 6 || !SameSizes(a, {0, 1, 3, 5}, {2, 4})) return 1;
  Momentum(a.F(0), a.F(1), a.F(3), a.F(5), Size(a, 0), static_cast<float>(a.Real(2)),
           static_cast<float>(a.Real(4)), nullptr, nullptr);
  return 0;
}

// FusedWeightScaleApplyMomentum (MindSpore's GPU op; here for engine.DecayedMomentum):
// weight_decay, loss_scale, variable, accumulation, learning_rate, gradient, momentum -> variable
int DecayedMomentumStep(const Args &a) {
  if (a.n != 8 || !SameSizes(a, {2, 3, 5, 7}, {0, 1, 4, 6}) || !a.IsF32(0) || !a.IsF32(1)) return 1;
  const float *decay = a.F(0), *scale = a.F(1);
  Momentum(a.F(2), a.F(3), a.F(5), a.F(7), Size(a, 2), static_cast<float>(a.Real(4)),
           static_cast<float>(a.Real(6)), *decay != 0.0f ? decay : nullptr, *scale != 1.0f ? scale : nullptr);
  return 0;
}

// RESNET_MS_KERNEL_TIMES=1: wall time per op and input shape, summed over the run and
// printed on stderr when the process exits: how much of a training step these kernels
// take, and which of them (benchmarks/RESULTS.md's per-operator accounts).
class Timings {
 public:
  static Timings &Get() {
    static Timings t;
    return t;
  }
  bool on = std::getenv("RESNET_MS_KERNEL_TIMES") != nullptr;
  void Add(const std::string &key, double seconds) {
    std::lock_guard<std::mutex> lk(lock_);
    auto &e = table_[key];
    e.first += seconds;
    e.second += 1;
  }
  ~Timings() {
    if (!on) return;
    double total = 0;
    for (const auto &kv : table_) total += kv.second.first;
    std::fprintf(stderr, "resnet_ms kernel times: %.3f s in all\n", total);
    for (const auto &kv : table_)
      std::fprintf(stderr, "  %9.3f s %7ld calls  %s\n", kv.second.first, kv.second.second, kv.first.c_str());
  }

 private:
  std::mutex lock_;
  std::map<std::string, std::pair<double, long>> table_;
};

const bool kDebug = std::getenv("RESNET_MS_KERNEL_DEBUG") != nullptr;

template <typename F>
int Timed(const char *name, F body, const Args &a) {
  if (!Timings::Get().on) return body(a);
  const auto start = std::chrono::steady_clock::now();
  const int status = body(a);
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
  Timings::Get().Add(Key(name, {a.Shape(0), a.Shape(1)}), took.count());
  return status;
}

template <typename F>
int Guarded(const char *name, F body, int n, void **p, int *nd, int64_t **sh, const char **dtype, void *extra) {
  Args a{n, p, nd, sh, dtype};
  // RESNET_MS_KERNEL_DEBUG=1: every call's pointers and shapes, and any strided (view)
  // input, on stderr: the tool for the open whole-network mismatch (cpu_kernels.py).
  if (kDebug) {
    std::fprintf(stderr, "op n=%d", n);
    for (int i = 0; i < n; ++i) {
      std::fprintf(stderr, " %p[", p[i]);
      for (int j = 0; j < nd[i]; ++j) std::fprintf(stderr, "%ld,", static_cast<long>(sh[i][j]));
      std::fprintf(stderr, "]");
      std::fprintf(stderr, "%s", dtype[i]);
      if (std::strcmp(dtype[i], "int64") == 0 && p[i] && nd[i] <= 1)
        for (auto v : a.Ints(i)) std::fprintf(stderr, "=%ld", static_cast<long>(v));
    }
    std::fprintf(stderr, "\n");
    auto *info = static_cast<mindspore::kernel::op_plugin::KernelInputInfo *>(extra);
    for (size_t i = 0; i < info->GetInputSize(); ++i) {
      auto l = info->GetInputTensorLayout(i);
      if (!l.has_value()) continue;
      std::fprintf(stderr, "view: input %zu ptr %p offset %zu strides", i, p[i], l->storage_offset);
      for (auto st : l->strides) std::fprintf(stderr, " %ld", static_cast<long>(st));
      std::fprintf(stderr, " shape");
      for (int j = 0; j < nd[i]; ++j) std::fprintf(stderr, " %ld", static_cast<long>(sh[i][j]));
      std::fprintf(stderr, "\n");
    }
  }
  try {
    std::lock_guard<std::mutex> lk(Ctx().lock);
    return Timed(name, body, a);
  } catch (const dnnl::error &e) {
    std::fprintf(stderr, "resnet_ms oneDNN kernel: %s (status %d)\n", e.what(), static_cast<int>(e.status));
    return 2;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "resnet_ms oneDNN kernel: %s\n", e.what());
    return 3;
  }
}

const char *kOps[] = {"Conv2DExt",       "Convolution",     "ConvolutionGrad", "BatchNormExt", "BatchNormGradExt",
                      "MaxPoolWithMask", "MaxPoolGradWithMask",
                      "ApplyMomentum",   "FusedWeightScaleApplyMomentum"};

}  // namespace

extern "C" {
int GetRegisteredOpCount() { return sizeof(kOps) / sizeof(kOps[0]); }
char **GetAllRegisteredOps() { return const_cast<char **>(kOps); }
bool IsKernelRegistered(const char *name) {
  for (const char *op : kOps)
    if (std::strcmp(op, name) == 0) return true;
  return false;
}

#define RESNET_MS_OP(NAME, BODY)                                                                  \
  int NAME(int n, void **p, int *nd, int64_t **sh, const char **dtype, void *, void *extra) {  \
    return Guarded(#NAME, BODY, n, p, nd, sh, dtype, extra);                                    \
  }
RESNET_MS_OP(Conv2DExt, Conv2DForward)
RESNET_MS_OP(Convolution, ConvolutionForward)
RESNET_MS_OP(ConvolutionGrad, ConvBackward)
RESNET_MS_OP(BatchNormExt, BatchNormForward)
RESNET_MS_OP(BatchNormGradExt, BatchNormBackward)
RESNET_MS_OP(MaxPoolWithMask, MaxPoolForward)
RESNET_MS_OP(MaxPoolGradWithMask, MaxPoolBackward)
RESNET_MS_OP(ApplyMomentum, MomentumStep)
RESNET_MS_OP(FusedWeightScaleApplyMomentum, DecayedMomentumStep)

// For the Python side: which oneDNN this library runs on.
const char *ResnetMsKernelInfo() {
  static std::string info;
  const dnnl_version_t *v = dnnl_version();
  info = "oneDNN " + std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch) +
         ", " + std::to_string(Ctx().pool.get_num_threads()) + " threads";
  return info.c_str();
}
}
