// Latency statistics and the JSON writer of rlock-bench. Header-only; no dependencies.
//
// Every result is one JSON object ("record") on its own line of the results file, so the peer
// scripts (bench/peers/) can print records in the same format and the bench splices their lines in
// without parsing them. bench/render.py reads the file back.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

namespace bench {

using Clock = std::chrono::steady_clock;

inline double us_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::micro>(b - a).count();
}

// The quantiles kept for the latency-distribution plot (percent). The same list is used by the peers.
inline const std::vector<double> &plot_quantiles() {
  static const std::vector<double> q = [] {
    std::vector<double> v;
    for (int p = 0; p <= 98; p += 2) v.push_back(p);
    for (double p : {99.0, 99.5, 99.9, 100.0}) v.push_back(p);
    return v;
  }();
  return q;
}

// Nearest-rank percentile of sorted samples (p in percent). 0 for no samples.
inline double percentile(const std::vector<double> &sorted, double p) {
  if (sorted.empty()) return 0;
  if (p <= 0) return sorted.front();
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
  if (rank < 1) rank = 1;
  if (rank > sorted.size()) rank = sorted.size();
  return sorted[rank - 1];
}

struct Summary {
  size_t n = 0;
  double mean = 0, median = 0, p99 = 0, min = 0, max = 0;
  std::vector<std::pair<double, double>> cdf;  // (percent, value)
};

inline Summary summarize(std::vector<double> v) {
  Summary s;
  s.n = v.size();
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.mean = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
  s.median = percentile(v, 50);
  s.p99 = percentile(v, 99);
  s.min = v.front();
  s.max = v.back();
  for (double q : plot_quantiles()) s.cdf.emplace_back(q, percentile(v, q));
  return s;
}

// A JSON object built field by field, in insertion order. Values are written as they are added.
class JsonObject {
 public:
  JsonObject &str(const std::string &key, const std::string &value) {
    return raw(key, quote(value));
  }
  JsonObject &num(const std::string &key, double value) { return raw(key, number(value)); }
  JsonObject &integer(const std::string &key, long long value) {
    return raw(key, std::to_string(value));
  }
  JsonObject &boolean(const std::string &key, bool value) {
    return raw(key, value ? "true" : "false");
  }
  JsonObject &obj(const std::string &key, const JsonObject &value) { return raw(key, value.text()); }
  JsonObject &summary(const std::string &key, const Summary &s) {
    JsonObject o;
    o.integer("n", static_cast<long long>(s.n))
        .num("mean", s.mean)
        .num("median", s.median)
        .num("p99", s.p99)
        .num("min", s.min)
        .num("max", s.max);
    std::string cdf = "[";
    for (size_t i = 0; i < s.cdf.size(); ++i) {
      if (i) cdf += ",";
      cdf += "[" + number(s.cdf[i].first) + "," + number(s.cdf[i].second) + "]";
    }
    o.raw("cdf", cdf + "]");
    return obj(key, o);
  }
  // `json` must already be valid JSON text.
  JsonObject &raw(const std::string &key, const std::string &json) {
    if (!body_.empty()) body_ += ",";
    body_ += quote(key) + ":" + json;
    return *this;
  }
  std::string text() const { return "{" + body_ + "}"; }

  static std::string quote(const std::string &s) {
    std::string out = "\"";
    for (unsigned char c : s) {
      switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
          if (c < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            out += buf;
          } else {
            out += static_cast<char>(c);
          }
      }
    }
    return out + "\"";
  }
  static std::string number(double v) {
    if (!std::isfinite(v)) return "null";
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.6g", v);
    return buf;
  }

 private:
  std::string body_;
};

}  // namespace bench
