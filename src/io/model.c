/* model.c - load / save any supported model file, by extension or magic:
 *   .onnx  ONNX ModelProto (onnx.c)
 *   .bin   llama2.c checkpoint (llama2c.c)
 * Files with another extension are recognised by their first bytes when
 * loading (an ONNX model starts with the protobuf key of ir_version, 0x08);
 * saving needs one of the two extensions. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "shrink.h"

static int has_ext(const char *path, const char *ext)
{
    size_t n = strlen(path), e = strlen(ext);
    return n > e && strcasecmp(path + n - e, ext) == 0;
}

int sh_model_load(const char *path, sh_graph **out, sh_error *err)
{
    *out = NULL;
    if (!path || !*path) return sh_err(err, SH_EINVAL, "no model path given");
    if (has_ext(path, ".onnx")) return sh_onnx_load(path, out, err);
    if (has_ext(path, ".bin")) return sh_llama2c_load(path, out, err);
    FILE *f = fopen(path, "rb");
    if (!f) return sh_onnx_load(path, out, err); /* reports the open error */
    unsigned char head[4] = {0};
    size_t n = fread(head, 1, sizeof head, f);
    fclose(f);
    if (n >= 2 && head[0] == 0x08) return sh_onnx_load(path, out, err);
    return sh_err(err, SH_EUNSUPPORTED, "%s: unknown model format (expected a .onnx ONNX model or a .bin llama2.c checkpoint)",
                  path);
}

int sh_model_save(const sh_graph *g, const char *path, sh_error *err)
{
    if (!path || !*path) return sh_err(err, SH_EINVAL, "no output path given");
    if (has_ext(path, ".onnx")) return sh_onnx_save(g, path, err);
    if (has_ext(path, ".bin")) return sh_llama2c_save(g, path, err);
    return sh_err(err, SH_EINVAL, "%s: unknown model format (use the extension .onnx or .bin)", path);
}
