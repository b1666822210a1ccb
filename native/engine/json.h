// json.h — the small JSON reader/writer the engine needs for Hugging Face config.json, safetensors headers and
// checkpoint metadata. Numbers are doubles (int64 offsets up to 2^53 are exact, far above any file size here).
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace engine {

struct Json {
  enum Type { Null, Bool, Number, String, Array, Object } type = Null;
  bool b = false;
  double num = 0;
  std::string str;
  std::vector<Json> arr;
  std::vector<std::pair<std::string, Json>> obj;  // insertion order kept (stable output)

  const Json* get(const std::string& key) const;  // nullptr when absent or not an object
  Json& set(const std::string& key, Json v);
  static Json number(double v) { Json j; j.type = Number; j.num = v; return j; }
  static Json string(std::string s) { Json j; j.type = String; j.str = std::move(s); return j; }
  static Json boolean(bool v) { Json j; j.type = Bool; j.b = v; return j; }
  static Json object() { Json j; j.type = Object; return j; }
  static Json array() { Json j; j.type = Array; return j; }
};

// Throws EngineError(code) with `what` (the file name) and the byte offset on malformed input.
Json json_parse(const std::string& text, const std::string& what, bool checkpoint = false);
std::string json_dump(const Json& j, int indent = 0);

// A float widened to double, as the shortest decimal that reads back as that float (1e-5f -> 1e-05, not
// 9.9999997473787516e-06): what Hugging Face config.json files hold for epsilons and rope settings. Values that
// are not exactly a float, and integers, come back unchanged.
double float_decimal(double v);

// Typed accessors that name the field and the file when it is missing or has the wrong type.
double json_number(const Json& obj, const char* key, const std::string& what);
std::string json_string(const Json& obj, const char* key, const std::string& what);

}  // namespace engine
