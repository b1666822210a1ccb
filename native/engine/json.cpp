// json.cpp — recursive-descent JSON parser and writer (see json.h).
#include "json.h"
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include "errors.h"

namespace engine {

const Json* Json::get(const std::string& key) const {
  if (type != Object) return nullptr;
  for (const auto& kv : obj)
    if (kv.first == key) return &kv.second;
  return nullptr;
}

Json& Json::set(const std::string& key, Json v) {
  type = Object;
  for (auto& kv : obj)
    if (kv.first == key) return kv.second = std::move(v);
  obj.emplace_back(key, std::move(v));
  return obj.back().second;
}

namespace {
struct Parser {
  const std::string& s;
  const std::string& what;
  bool ckpt;
  size_t i = 0;
  int depth = 0;

  [[noreturn]] void fail(const char* msg) {
    throw EngineError(ckpt ? ErrorCode::BadCheckpoint : ErrorCode::IO,
                      strfmt("%s: invalid JSON at byte %zu: %s", what.c_str(), i, msg), ENGINE_FILE_, __LINE__,
                      "the file is corrupt or not JSON; re-create it");
  }
  void ws() { while (i < s.size() && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t')) i++; }
  bool lit(const char* w) {
    size_t n = std::strlen(w);
    if (s.compare(i, n, w) == 0) { i += n; return true; }
    return false;
  }
  static void utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) out += (char)cp;
    else if (cp < 0x800) { out += (char)(0xC0 | (cp >> 6)); out += (char)(0x80 | (cp & 0x3F)); }
    else if (cp < 0x10000) { out += (char)(0xE0 | (cp >> 12)); out += (char)(0x80 | ((cp >> 6) & 0x3F)); out += (char)(0x80 | (cp & 0x3F)); }
    else { out += (char)(0xF0 | (cp >> 18)); out += (char)(0x80 | ((cp >> 12) & 0x3F)); out += (char)(0x80 | ((cp >> 6) & 0x3F)); out += (char)(0x80 | (cp & 0x3F)); }
  }
  unsigned hex4() {
    if (i + 4 > s.size()) fail("truncated \\u escape");
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
      char c = s[i++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= c - '0';
      else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
      else fail("bad \\u escape");
    }
    return v;
  }
  std::string str() {
    if (s[i] != '"') fail("expected string");
    i++;
    std::string out;
    while (true) {
      if (i >= s.size()) fail("unterminated string");
      char c = s[i++];
      if (c == '"') break;
      if (c != '\\') { out += c; continue; }
      if (i >= s.size()) fail("unterminated escape");
      char e = s[i++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00 && i + 6 <= s.size() && s[i] == '\\' && s[i + 1] == 'u') {
            i += 2;
            unsigned lo = hex4();
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          utf8(out, cp);
          break;
        }
        default: fail("bad escape");
      }
    }
    return out;
  }
  Json value() {
    if (++depth > 200) fail("nesting too deep");
    ws();
    if (i >= s.size()) fail("unexpected end");
    Json j;
    char c = s[i];
    if (c == '{') {
      i++;
      j.type = Json::Object;
      ws();
      if (i < s.size() && s[i] == '}') { i++; depth--; return j; }
      while (true) {
        ws();
        if (i >= s.size()) fail("unexpected end in object");
        std::string k = str();
        ws();
        if (i >= s.size() || s[i] != ':') fail("expected ':'");
        i++;
        j.obj.emplace_back(std::move(k), value());
        ws();
        if (i < s.size() && s[i] == ',') { i++; continue; }
        if (i < s.size() && s[i] == '}') { i++; break; }
        fail("expected ',' or '}'");
      }
    } else if (c == '[') {
      i++;
      j.type = Json::Array;
      ws();
      if (i < s.size() && s[i] == ']') { i++; depth--; return j; }
      while (true) {
        j.arr.push_back(value());
        ws();
        if (i < s.size() && s[i] == ',') { i++; continue; }
        if (i < s.size() && s[i] == ']') { i++; break; }
        fail("expected ',' or ']'");
      }
    } else if (c == '"') {
      j.type = Json::String;
      j.str = str();
    } else if (lit("true")) { j.type = Json::Bool; j.b = true; }
    else if (lit("false")) { j.type = Json::Bool; j.b = false; }
    else if (lit("null")) { j.type = Json::Null; }
    else if (lit("NaN")) { j.type = Json::Number; j.num = NAN; }           // Python's json.dumps writes these
    else if (lit("Infinity")) { j.type = Json::Number; j.num = INFINITY; }
    else if (lit("-Infinity")) { j.type = Json::Number; j.num = -INFINITY; }
    else {
      const char* start = s.c_str() + i;
      char* end = nullptr;
      double v = std::strtod(start, &end);
      if (end == start) fail("unexpected character");
      i += (size_t)(end - start);
      j.type = Json::Number;
      j.num = v;
    }
    depth--;
    return j;
  }
};

void dump_(const Json& j, std::string& out, int indent, int level) {
  auto nl = [&](int lv) {
    if (!indent) return;
    out += '\n';
    out.append((size_t)(indent * lv), ' ');
  };
  switch (j.type) {
    case Json::Null: out += "null"; break;
    case Json::Bool: out += j.b ? "true" : "false"; break;
    case Json::Number: {
      char buf[64];
      if (!std::isfinite(j.num)) out += "null";
      else if (j.num == std::floor(j.num) && std::fabs(j.num) < 9.007199254740992e15) {
        snprintf(buf, sizeof buf, "%lld", (long long)j.num);
        out += buf;
      } else {
        // The shortest form that reads back as the same double (1e-05, not 1.0000000000000001e-05).
        for (int prec = 1; prec <= 17; prec++) {
          snprintf(buf, sizeof buf, "%.*g", prec, j.num);
          if (std::strtod(buf, nullptr) == j.num) break;
        }
        out += buf;
      }
      break;
    }
    case Json::String: {
      out += '"';
      for (unsigned char c : j.str) {
        if (c == '"') out += "\\\"";
        else if (c == '\\') out += "\\\\";
        else if (c == '\n') out += "\\n";
        else if (c < 0x20) { char buf[8]; snprintf(buf, sizeof buf, "\\u%04x", c); out += buf; }
        else out += (char)c;
      }
      out += '"';
      break;
    }
    case Json::Array:
      out += '[';
      for (size_t k = 0; k < j.arr.size(); k++) {
        if (k) out += ',';
        nl(level + 1);
        dump_(j.arr[k], out, indent, level + 1);
      }
      if (!j.arr.empty()) nl(level);
      out += ']';
      break;
    case Json::Object:
      out += '{';
      for (size_t k = 0; k < j.obj.size(); k++) {
        if (k) out += ',';
        nl(level + 1);
        dump_(Json::string(j.obj[k].first), out, indent, level + 1);
        out += indent ? ": " : ":";
        dump_(j.obj[k].second, out, indent, level + 1);
      }
      if (!j.obj.empty()) nl(level);
      out += '}';
      break;
  }
}
}  // namespace

Json json_parse(const std::string& text, const std::string& what, bool checkpoint) {
  Parser p{text, what, checkpoint};
  Json j = p.value();
  p.ws();
  if (p.i != text.size()) p.fail("trailing characters");
  return j;
}

std::string json_dump(const Json& j, int indent) {
  std::string out;
  dump_(j, out, indent, 0);
  return out;
}

double json_number(const Json& obj, const char* key, const std::string& what) {
  const Json* v = obj.get(key);
  ENGINE_CHECK(v && v->type == Json::Number, BadConfig, "", "%s: field '%s' missing or not a number", what.c_str(), key);
  return v->num;
}

std::string json_string(const Json& obj, const char* key, const std::string& what) {
  const Json* v = obj.get(key);
  ENGINE_CHECK(v && v->type == Json::String, BadConfig, "", "%s: field '%s' missing or not a string", what.c_str(), key);
  return v->str;
}

double float_decimal(double v) {
  const float f = (float)v;
  if ((double)f != v || !std::isfinite(v) || v == std::floor(v)) return v;
  char buf[32];
  for (int prec = 1; prec <= 9; prec++) {
    snprintf(buf, sizeof buf, "%.*g", prec, v);
    if (std::strtof(buf, nullptr) == f) return std::strtod(buf, nullptr);
  }
  return v;
}

}  // namespace engine
