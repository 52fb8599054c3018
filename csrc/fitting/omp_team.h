// A team of OpenMP threads emulating a CUDA thread block on the CPU (tests only): runs the
// block-parallel path of the per-sample algorithms (batched solves, fused LM) with real barriers, so
// the GPU's work split is checked on machines without a GPU.
#pragma once

#include <omp.h>

#include <stdexcept>
#include <string>
#include <vector>

namespace smplfast {
namespace solve {

// A team of OpenMP threads playing the part of a CUDA block: `lanes` consecutive ranks form a row
// group (a warp), reductions go through shared arrays between barriers.
template <typename T>
struct OmpTeam {
  static constexpr bool kSerial = false;
  int r, s, lanes;
  T* red;     // 2 * s, shared by the team
  int* flags;  // s, shared by the team
  int rank() const { return r; }
  int size() const { return s; }
  int row0() const { return r / lanes; }
  int row_step() const { return s / lanes; }
  int col0() const { return r % lanes; }
  int col_step() const { return lanes; }
  void sync() const {
#pragma omp barrier
  }
  bool any(bool v) const {
    flags[r] = v ? 1 : 0;
    sync();
    bool out = false;
    for (int i = 0; i < s; ++i) out |= flags[i] != 0;
    sync();
    return out;
  }
  void sum2(T& a, T& b) const {
    red[2 * r] = a;
    red[2 * r + 1] = b;
    sync();
    a = T(0);
    b = T(0);
    for (int i = 0; i < s; ++i) {
      a += red[2 * i];
      b += red[2 * i + 1];
    }
    sync();
  }
  T sum(T v) const {
    T unused = T(0);
    sum2(v, unused);
    return v;
  }
};

template <typename T, typename Body>
void run_team(int threads, int lanes, Body body) {
  if (threads < 1 || lanes < 1 || threads % lanes != 0)
    throw std::invalid_argument("team emulation: threads must be a positive multiple of lanes; got " +
                                std::to_string(threads) + " and " + std::to_string(lanes));
  std::vector<T> red(2 * static_cast<size_t>(threads));
  std::vector<int> flags(static_cast<size_t>(threads));
  int got = threads;
#pragma omp parallel num_threads(threads)
  {
    if (omp_get_num_threads() != threads) {
#pragma omp single
      got = omp_get_num_threads();
    } else {
      OmpTeam<T> team{omp_get_thread_num(), threads, lanes, red.data(), flags.data()};
      body(team);
    }
  }
  if (got != threads)
    throw std::runtime_error("team emulation: OpenMP gave " + std::to_string(got) + " threads, not " +
                             std::to_string(threads));
}

}  // namespace solve
}  // namespace smplfast
