/* onnx.c - ONNX ModelProto <-> sh_graph and single TensorProto files, with
 * protobuf-c (code generated from /usr/include/onnx/onnx.proto at build time).
 *
 * Import: initializers (raw_data or typed fields, little-endian), graph inputs
 * that are not initializers, outputs and value shapes (dim_param or missing
 * dims become -1), node attributes (INT, FLOAT, STRING, INTS, FLOATS, TENSOR),
 * opset imports, domains and metadata_props.  Constant nodes are folded into
 * initializers at load time (their output name becomes the initializer
 * name), so the runtime never sees them.  Every failure is one error line
 * naming the file and the tensor / node / value involved; nothing in a
 * malformed file can crash the loader (protobuf-c validates lengths, and every
 * size taken from the file is checked against the bytes present before
 * anything is allocated).
 *
 * Export: IR version 8, the graph's opset for the default domain (plus
 * "com.shrink" version 1 when shrink's own ops are used), initializers as
 * raw_data, value_info with shapes for the graph inputs and outputs (-1 dims
 * become dim_param "N"), metadata_props.  Written atomically.
 */
#include <stdlib.h>
#include <string.h>

#include "shrink.h"
#include "onnx.pb-c.h"

#define MAX_ELEMS ((int64_t)1 << 40)

static char *xstrdup(const char *s)
{
    if (!s) s = "";
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static const char *dtype_name(int dt)
{
    switch (dt) {
    case ONNX__TENSOR_PROTO__DATA_TYPE__UNDEFINED: return "UNDEFINED";
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT: return "FLOAT";
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT8: return "UINT8";
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT8: return "INT8";
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT16: return "UINT16";
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT16: return "INT16";
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT32: return "INT32";
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT64: return "INT64";
    case ONNX__TENSOR_PROTO__DATA_TYPE__STRING: return "STRING";
    case ONNX__TENSOR_PROTO__DATA_TYPE__BOOL: return "BOOL";
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16: return "FLOAT16";
    case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE: return "DOUBLE";
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT32: return "UINT32";
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT64: return "UINT64";
    case ONNX__TENSOR_PROTO__DATA_TYPE__COMPLEX64: return "COMPLEX64";
    case ONNX__TENSOR_PROTO__DATA_TYPE__COMPLEX128: return "COMPLEX128";
    case ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16: return "BFLOAT16";
    default: return "unknown";
    }
}

/* ONNX data type -> storage format; DOUBLE is converted to f32.  0 if none. */
static int fmt_of_dtype(int dt, sh_format *f)
{
    switch (dt) {
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT: *f = SH_F32; return 1;
    case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE: *f = SH_F32; return 1;
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16: *f = SH_F16; return 1;
    case ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16: *f = SH_BF16; return 1;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT8: *f = SH_I8; return 1;
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT8: *f = SH_U8; return 1;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT32: *f = SH_I32; return 1;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT64: *f = SH_I64; return 1;
    case ONNX__TENSOR_PROTO__DATA_TYPE__BOOL: *f = SH_BOOL; return 1;
    default: return 0;
    }
}

/* Storage format -> ONNX data type, or -1 (formats with no ONNX type). */
static int dtype_of_fmt(sh_format f)
{
    switch (f) {
    case SH_F32: return ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    case SH_F16: return ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16;
    case SH_BF16: return ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16;
    case SH_I8: return ONNX__TENSOR_PROTO__DATA_TYPE__INT8;
    case SH_U8: return ONNX__TENSOR_PROTO__DATA_TYPE__UINT8;
    case SH_I32: return ONNX__TENSOR_PROTO__DATA_TYPE__INT32;
    case SH_I64: return ONNX__TENSOR_PROTO__DATA_TYPE__INT64;
    case SH_BOOL: return ONNX__TENSOR_PROTO__DATA_TYPE__BOOL;
    default: return -1;
    }
}

static const char *fmt_name(sh_format f)
{
    const sh_format_traits *t = sh_format_get(f);
    return t && t->name ? t->name : "?";
}

/* ------------------------------------------------------------------------ */
/* TensorProto -> sh_tensor                                                  */
/* ------------------------------------------------------------------------ */

/* what: file name; kind: "initializer", "tensor", "node 'c' attribute 'value'". */
static int tensor_from_proto(const Onnx__TensorProto *tp, const char *what, const char *kind,
                             sh_tensor **out, sh_error *err)
{
    *out = NULL;
    const char *nm = tp->name && *tp->name ? tp->name : "(unnamed)";
    int dt = tp->has_data_type ? tp->data_type : 0;
    if ((tp->has_data_location && tp->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL) ||
        tp->n_external_data > 0)
        return sh_err(err, SH_EUNSUPPORTED, "%s: %s '%s' uses external data, not supported (save the model with all tensors inline)",
                      what, kind, nm);
    if (tp->segment)
        return sh_err(err, SH_EUNSUPPORTED, "%s: %s '%s' is segmented, not supported", what, kind, nm);
    sh_format fmt;
    if (!fmt_of_dtype(dt, &fmt))
        return sh_err(err, SH_EUNSUPPORTED, "%s: %s '%s' has data type %s (%d), not supported", what, kind, nm,
                      dtype_name(dt), dt);
    if (tp->n_dims > SH_MAX_DIMS)
        return sh_err(err, SH_EUNSUPPORTED, "%s: %s '%s' has rank %zu, at most %d supported", what, kind, nm,
                      tp->n_dims, SH_MAX_DIMS);
    int nd = (int)tp->n_dims;
    int64_t shape[SH_MAX_DIMS], numel = 1;
    for (int i = 0; i < nd; i++) {
        shape[i] = tp->dims[i];
        if (shape[i] < 0)
            return sh_err(err, SH_EFORMAT, "%s: %s '%s' has negative dimension %lld", what, kind, nm,
                          (long long)shape[i]);
        if (shape[i] > 0 && numel > MAX_ELEMS / shape[i])
            return sh_err(err, SH_EFORMAT, "%s: %s '%s' is too large (more than 2^40 elements)", what, kind, nm);
        numel *= shape[i];
    }
    char sb[160];
    sh_shape_str(nd, shape, sb, sizeof sb);
    int is_double = dt == ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE;
    size_t esize = is_double ? 8 : sh_format_bytes(fmt, 1);
    if (tp->has_raw_data) {
        size_t need = (size_t)numel * esize;
        if (tp->raw_data.len != need)
            return sh_err(err, SH_EFORMAT, "%s: %s '%s' of shape %s and type %s needs %zu bytes of raw_data, has %zu",
                          what, kind, nm, sb, dtype_name(dt), need, tp->raw_data.len);
        sh_tensor *t = sh_tensor_new(fmt, nd, shape, err);
        if (!t) return sh_error_wrap(err, "%s: %s '%s'", what, kind, nm);
        if (is_double) {
            float *d = t->data;
            for (int64_t i = 0; i < numel; i++) {
                double v;
                memcpy(&v, tp->raw_data.data + 8 * i, 8);
                d[i] = (float)v;
            }
        } else if (need) {
            memcpy(t->data, tp->raw_data.data, need);
        }
        *out = t;
        return SH_OK;
    }
    /* typed fields */
    size_t have;
    const char *field;
    switch (dt) {
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT: have = tp->n_float_data, field = "float_data"; break;
    case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE: have = tp->n_double_data, field = "double_data"; break;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT64: have = tp->n_int64_data, field = "int64_data"; break;
    default: have = tp->n_int32_data, field = "int32_data"; break;
    }
    if (have != (size_t)numel) {
        if (have == 0)
            return sh_err(err, SH_EFORMAT, "%s: %s '%s' of shape %s has no data (neither raw_data nor %s)", what,
                          kind, nm, sb, field);
        return sh_err(err, SH_EFORMAT, "%s: %s '%s' of shape %s needs %lld values in %s, has %zu", what, kind, nm,
                      sb, (long long)numel, field, have);
    }
    sh_tensor *t = sh_tensor_new(fmt, nd, shape, err);
    if (!t) return sh_error_wrap(err, "%s: %s '%s'", what, kind, nm);
    if (numel > 0) switch (dt) {
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT: memcpy(t->data, tp->float_data, 4 * (size_t)numel); break;
    case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE:
        for (int64_t i = 0; i < numel; i++) ((float *)t->data)[i] = (float)tp->double_data[i];
        break;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT64: memcpy(t->data, tp->int64_data, 8 * (size_t)numel); break;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT32: memcpy(t->data, tp->int32_data, 4 * (size_t)numel); break;
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16:
    case ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16:
        for (int64_t i = 0; i < numel; i++) ((uint16_t *)t->data)[i] = (uint16_t)tp->int32_data[i];
        break;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT8:
        for (int64_t i = 0; i < numel; i++) ((int8_t *)t->data)[i] = (int8_t)tp->int32_data[i];
        break;
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT8:
        for (int64_t i = 0; i < numel; i++) ((uint8_t *)t->data)[i] = (uint8_t)tp->int32_data[i];
        break;
    case ONNX__TENSOR_PROTO__DATA_TYPE__BOOL:
        for (int64_t i = 0; i < numel; i++) ((uint8_t *)t->data)[i] = tp->int32_data[i] != 0;
        break;
    default:
        sh_tensor_free(t);
        return sh_err(err, SH_EINTERNAL, "%s: %s '%s': unhandled data type %d", what, kind, nm, dt);
    }
    *out = t;
    return SH_OK;
}

/* ------------------------------------------------------------------------ */
/* shrink's own storage formats (quantized q4_0..., sparse csr/bcsr/nm)      */
/* ------------------------------------------------------------------------ */
/* ONNX has no data type for them, so such an initializer is stored as a 1-D
 * UINT8 tensor holding the format's bytes, and the model's metadata_props
 * get an entry "shrink.format.<initializer name>" = "<format> <d0>,<d1>,..."
 * (format name as in the format table, the tensor's shape).  Other ONNX tools
 * see a plain uint8 weight; shrink restores the tensor exactly.  The entries
 * are consumed on import (not kept in the graph's metadata). */
#define NATIVE_KEY "shrink.format."

static const char *native_spec(const Onnx__ModelProto *m, const char *name)
{
    size_t nk = strlen(NATIVE_KEY);
    for (size_t i = 0; i < m->n_metadata_props; i++) {
        const Onnx__StringStringEntryProto *p = m->metadata_props[i];
        if (p->key && strncmp(p->key, NATIVE_KEY, nk) == 0 && strcmp(p->key + nk, name) == 0)
            return p->value ? p->value : "";
    }
    return NULL;
}

static int native_from_u8(sh_tensor **pt, const char *name, const char *spec, const char *what, sh_error *err)
{
    sh_tensor *t = *pt;
    char fname[32];
    size_t fl = strcspn(spec, " ");
    if (fl == 0 || fl >= sizeof fname) goto bad_spec;
    memcpy(fname, spec, fl);
    fname[fl] = 0;
    int f = sh_format_from_name(fname);
    if (f < 0 || dtype_of_fmt((sh_format)f) >= 0)
        return sh_err(err, SH_EUNSUPPORTED, "%s: initializer '%s' is stored in shrink format '%s', unknown to this build",
                      what, name, fname);
    int64_t shape[SH_MAX_DIMS], numel = 1;
    int nd = 0;
    const char *q = spec + fl;
    while (*q == ' ') q++;
    while (*q) {
        char *end;
        long long d = strtoll(q, &end, 10);
        if (end == q || d < 0 || nd == SH_MAX_DIMS) goto bad_spec;
        if (d > 0 && numel > MAX_ELEMS / d) goto bad_spec;
        numel *= d;
        shape[nd++] = d;
        q = end;
        if (*q == ',') q++;
        else if (*q) goto bad_spec;
    }
    if (t->fmt != SH_U8 || t->ndim != 1)
        return sh_err(err, SH_EFORMAT, "%s: initializer '%s' in shrink format %s must be stored as 1-D UINT8 bytes", what,
                      name, fname);
    char sb[160];
    sh_shape_str(nd, shape, sb, sizeof sb);
    const sh_format_traits *ft = sh_format_get((sh_format)f);
    if (ft->packed) {
        size_t nb = t->nbytes;
        void *data = t->data;
        t->owns = 0;
        sh_tensor_free(t);
        *pt = NULL;
        sh_tensor *s = NULL;
        int rc = ft->is_quantized ? sh_qrows_wrap(data, nb, 1, &s, err) /* core/quant_formats.h */
                                  : sh_sparse_wrap(data, nb, 1, &s, err);
        if (rc) return sh_error_wrap(err, "%s: initializer '%s' (%s %s)", what, name, fname, sb);
        *pt = s;
        if (s->fmt != (sh_format)f || s->ndim != nd || memcmp(s->shape, shape, sizeof(int64_t) * (size_t)nd) != 0) {
            char sb2[160];
            return sh_err(err, SH_EFORMAT, "%s: initializer '%s': %s data of shape %s disagrees with its declared %s %s",
                          what, name, sh_format_get(s->fmt)->name, sh_shape_str(s->ndim, s->shape, sb2, sizeof sb2),
                          fname, sb);
        }
        return SH_OK;
    }
    size_t need = sh_format_bytes((sh_format)f, numel);
    if (t->nbytes != need)
        return sh_err(err, SH_EFORMAT, "%s: initializer '%s' (%s %s) needs %zu bytes, has %zu", what, name, fname, sb,
                      need, t->nbytes);
    t->fmt = (sh_format)f;
    t->ndim = nd;
    memcpy(t->shape, shape, sizeof(int64_t) * (size_t)nd);
    return SH_OK;
bad_spec:
    return sh_err(err, SH_EFORMAT, "%s: initializer '%s': bad shrink format entry '%s' (expected \"FORMAT d0,d1,...\")",
                  what, name, spec);
}

/* ------------------------------------------------------------------------ */
/* Import                                                                    */
/* ------------------------------------------------------------------------ */

/* Type of a graph input/output/value_info: format, rank (-1 unknown), dims
 * (-1 for dim_param or missing values). */
static int value_type(const Onnx__ValueInfoProto *vi, const char *what, const char *kind, sh_format *fmt,
                      int *ndim, int64_t *shape, sh_error *err)
{
    const char *nm = vi->name ? vi->name : "";
    *fmt = SH_F32;
    *ndim = -1;
    const Onnx__TypeProto *ty = vi->type;
    if (!ty || ty->value_case == ONNX__TYPE_PROTO__VALUE__NOT_SET) return SH_OK;
    if (ty->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !ty->tensor_type) {
        const char *k = ty->value_case == ONNX__TYPE_PROTO__VALUE_SEQUENCE_TYPE    ? "a sequence"
                        : ty->value_case == ONNX__TYPE_PROTO__VALUE_MAP_TYPE       ? "a map"
                        : ty->value_case == ONNX__TYPE_PROTO__VALUE_OPTIONAL_TYPE  ? "an optional"
                        : ty->value_case == ONNX__TYPE_PROTO__VALUE_SPARSE_TENSOR_TYPE ? "a sparse tensor"
                                                                                      : "a non-tensor value";
        return sh_err(err, SH_EUNSUPPORTED, "%s: %s '%s' is %s, only dense tensors are supported", what, kind, nm, k);
    }
    const Onnx__TypeProto__Tensor *tt = ty->tensor_type;
    if (tt->has_elem_type && tt->elem_type != 0 && !fmt_of_dtype(tt->elem_type, fmt))
        return sh_err(err, SH_EUNSUPPORTED, "%s: %s '%s' has data type %s (%d), not supported", what, kind, nm,
                      dtype_name(tt->elem_type), tt->elem_type);
    if (!tt->shape) return SH_OK;
    if (tt->shape->n_dim > SH_MAX_DIMS)
        return sh_err(err, SH_EUNSUPPORTED, "%s: %s '%s' has rank %zu, at most %d supported", what, kind, nm,
                      tt->shape->n_dim, SH_MAX_DIMS);
    *ndim = (int)tt->shape->n_dim;
    for (int i = 0; i < *ndim; i++) {
        const Onnx__TensorShapeProto__Dimension *d = tt->shape->dim[i];
        shape[i] = -1;
        if (d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE && d->dim_value >= 0)
            shape[i] = d->dim_value;
    }
    return SH_OK;
}

static int is_default_domain(const char *d) { return !d || !*d || strcmp(d, "ai.onnx") == 0; }

static const char *attr_type_name(int t)
{
    switch (t) {
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT: return "FLOAT";
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT: return "INT";
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING: return "STRING";
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR: return "TENSOR";
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH: return "GRAPH";
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__SPARSE_TENSOR: return "SPARSE_TENSOR";
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TYPE_PROTO: return "TYPE_PROTO";
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS: return "FLOATS";
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS: return "INTS";
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS: return "STRINGS";
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSORS: return "TENSORS";
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPHS: return "GRAPHS";
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__SPARSE_TENSORS: return "SPARSE_TENSORS";
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TYPE_PROTOS: return "TYPE_PROTOS";
    default: return "UNDEFINED";
    }
}

/* Attribute type, inferred from the fields present for old (IR < 2) files. */
static int attr_type(const Onnx__AttributeProto *a)
{
    if (a->has_type && a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED) return a->type;
    if (a->has_f) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
    if (a->has_i) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
    if (a->has_s) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING;
    if (a->t) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR;
    if (a->g) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH;
    if (a->n_floats) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS;
    if (a->n_ints) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
    if (a->n_strings) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS;
    return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED;
}

/* Append a tensor attribute to node k (takes ownership of t). */
static int node_add_tensor_attr(sh_graph *g, int k, const char *name, sh_tensor *t)
{
    sh_node *n = &g->nodes[k];
    sh_attr *a = realloc(n->attrs, (size_t)(n->n_attrs + 1) * sizeof *a);
    if (!a) {
        sh_tensor_free(t);
        return SH_ENOMEM;
    }
    n->attrs = a;
    a = &n->attrs[n->n_attrs];
    memset(a, 0, sizeof *a);
    a->name = xstrdup(name);
    if (!a->name) {
        sh_tensor_free(t);
        return SH_ENOMEM;
    }
    a->type = SH_ATTR_TENSOR;
    a->t = t;
    n->n_attrs++;
    return SH_OK;
}

/* Copy the attributes of node proto np to node k.  Attributes of types the IR
 * cannot hold are reported through *pending (first one only) so that
 * sh_graph_check can still list every unsupported op first. */
static int load_attrs(sh_graph *g, int k, const Onnx__NodeProto *np, const char *what, sh_error *pending,
                      sh_error *err)
{
    for (size_t i = 0; i < np->n_attribute; i++) {
        const Onnx__AttributeProto *a = np->attribute[i];
        const char *an = a->name ? a->name : "";
        const char *nn = g->nodes[k].name, *op = g->nodes[k].op;
        int rc = SH_OK;
        if (!*an)
            return sh_err(err, SH_EFORMAT, "%s: node '%s' (%s) has an attribute without a name", what, nn, op);
        if (a->ref_attr_name && *a->ref_attr_name) {
            if (pending->code == SH_OK)
                sh_err(pending, SH_EUNSUPPORTED, "%s: node '%s' (%s): attribute '%s' refers to a function attribute, not supported",
                       what, nn, op, an);
            continue;
        }
        int ty = attr_type(a);
        switch (ty) {
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT: rc = sh_node_set_int(g, k, an, a->i); break;
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT: rc = sh_node_set_float(g, k, an, a->f); break;
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING: {
            /* strings are bytes in protobuf; keep them NUL-terminated */
            char *s = malloc(a->s.len + 1);
            if (!s) return sh_err(err, SH_ENOMEM, "out of memory");
            if (a->s.len) memcpy(s, a->s.data, a->s.len);
            s[a->s.len] = 0;
            rc = sh_node_set_string(g, k, an, s);
            free(s);
            break;
        }
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS:
            if (a->n_ints > 1 << 24)
                return sh_err(err, SH_EFORMAT, "%s: node '%s' (%s): attribute '%s' has %zu ints", what, nn, op, an,
                              a->n_ints);
            rc = sh_node_set_ints(g, k, an, (int)a->n_ints, a->ints);
            break;
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS:
            if (a->n_floats > 1 << 24)
                return sh_err(err, SH_EFORMAT, "%s: node '%s' (%s): attribute '%s' has %zu floats", what, nn, op,
                              an, a->n_floats);
            rc = sh_node_set_floats(g, k, an, (int)a->n_floats, a->floats);
            break;
        case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR: {
            if (!a->t)
                return sh_err(err, SH_EFORMAT, "%s: node '%s' (%s): tensor attribute '%s' has no tensor", what, nn,
                              op, an);
            char kind[300];
            snprintf(kind, sizeof kind, "node '%s' (%s) attribute '%s' tensor", nn, op, an);
            sh_tensor *t;
            rc = tensor_from_proto(a->t, what, kind, &t, err);
            if (rc) return rc;
            rc = node_add_tensor_attr(g, k, an, t);
            break;
        }
        default:
            if (pending->code == SH_OK)
                sh_err(pending, SH_EUNSUPPORTED, "%s: node '%s' (%s): attribute '%s' of type %s is not supported",
                       what, nn, op, an, attr_type_name(ty));
            break;
        }
        if (rc) return sh_err(err, SH_ENOMEM, "out of memory");
    }
    return SH_OK;
}

/* A Constant node -> initializer named after its output. */
static int load_constant(sh_graph *g, const Onnx__NodeProto *np, const char *what, sh_error *err)
{
    const char *nn = np->name && *np->name ? np->name : "(unnamed)";
    if (np->n_output != 1 || !np->output[0] || !*np->output[0])
        return sh_err(err, SH_EFORMAT, "%s: Constant node '%s' must have exactly one output", what, nn);
    if (np->n_input != 0)
        return sh_err(err, SH_EFORMAT, "%s: Constant node '%s' takes no inputs, has %zu", what, nn, np->n_input);
    const char *on = np->output[0];
    sh_tensor *t = NULL;
    int rc = SH_OK, found = 0;
    for (size_t i = 0; i < np->n_attribute && !found; i++) {
        const Onnx__AttributeProto *a = np->attribute[i];
        const char *an = a->name ? a->name : "";
        int64_t one = 1;
        if (strcmp(an, "value") == 0) {
            if (!a->t) return sh_err(err, SH_EFORMAT, "%s: Constant node '%s': attribute 'value' has no tensor", what, nn);
            char kind[300];
            snprintf(kind, sizeof kind, "Constant node '%s' value", nn);
            rc = tensor_from_proto(a->t, what, kind, &t, err);
            if (rc) return rc;
            found = 1;
        } else if (strcmp(an, "value_float") == 0) {
            if (!(t = sh_tensor_new(SH_F32, 0, &one, err))) return sh_error_wrap(err, "%s", what);
            *(float *)t->data = a->f;
            found = 1;
        } else if (strcmp(an, "value_int") == 0) {
            if (!(t = sh_tensor_new(SH_I64, 0, &one, err))) return sh_error_wrap(err, "%s", what);
            *(int64_t *)t->data = a->i;
            found = 1;
        } else if (strcmp(an, "value_floats") == 0) {
            int64_t n = (int64_t)a->n_floats;
            if (!(t = sh_tensor_new(SH_F32, 1, &n, err))) return sh_error_wrap(err, "%s", what);
            if (n) memcpy(t->data, a->floats, 4 * (size_t)n);
            found = 1;
        } else if (strcmp(an, "value_ints") == 0) {
            int64_t n = (int64_t)a->n_ints;
            if (!(t = sh_tensor_new(SH_I64, 1, &n, err))) return sh_error_wrap(err, "%s", what);
            if (n) memcpy(t->data, a->ints, 8 * (size_t)n);
            found = 1;
        } else if (strcmp(an, "sparse_value") == 0 || strcmp(an, "value_string") == 0 ||
                   strcmp(an, "value_strings") == 0) {
            return sh_err(err, SH_EUNSUPPORTED, "%s: Constant node '%s': attribute '%s' is not supported", what, nn, an);
        }
    }
    if (!found) return sh_err(err, SH_EFORMAT, "%s: Constant node '%s' has no value attribute", what, nn);
    rc = sh_graph_add_init(g, on, t, err);
    if (rc < 0) return sh_error_wrap(err, "%s: Constant node '%s'", what, nn);
    return SH_OK;
}

static int load_model(const Onnx__ModelProto *m, const char *what, sh_graph **out, sh_error *err)
{
    const Onnx__GraphProto *gp = m->graph;
    if (!gp) return sh_err(err, SH_EFORMAT, "%s: not a valid ONNX model (no graph)", what);
    if (gp->n_sparse_initializer)
        return sh_err(err, SH_EUNSUPPORTED, "%s: sparse initializers are not supported", what);
    sh_graph *g = sh_graph_new(gp->name && *gp->name ? gp->name : "graph");
    if (!g) return sh_err(err, SH_ENOMEM, "out of memory");
    int rc = SH_OK;
    sh_error pending = {0};
    unsigned char *added = NULL;
    for (size_t i = 0; i < m->n_opset_import; i++) {
        const Onnx__OperatorSetIdProto *o = m->opset_import[i];
        if (is_default_domain(o->domain) && o->has_version) g->opset = o->version;
    }
    for (size_t i = 0; i < m->n_metadata_props; i++) {
        const Onnx__StringStringEntryProto *p = m->metadata_props[i];
        if (p->key && *p->key && strncmp(p->key, NATIVE_KEY, strlen(NATIVE_KEY)) != 0)
            sh_graph_set_meta(g, p->key, p->value ? p->value : "");
    }
    /* initializers */
    for (size_t i = 0; i < gp->n_initializer; i++) {
        const Onnx__TensorProto *tp = gp->initializer[i];
        if (!tp->name || !*tp->name) {
            rc = sh_err(err, SH_EFORMAT, "%s: initializer #%zu has no name", what, i);
            goto fail;
        }
        sh_tensor *t;
        if ((rc = tensor_from_proto(tp, what, "initializer", &t, err))) goto fail;
        const char *spec = native_spec(m, tp->name);
        if (spec && (rc = native_from_u8(&t, tp->name, spec, what, err))) {
            sh_tensor_free(t);
            goto fail;
        }
        int v = sh_graph_add_init(g, tp->name, t, err);
        if (v < 0) {
            rc = sh_error_wrap(err, "%s", what);
            goto fail;
        }
    }
    /* graph inputs that are not initializers */
    for (size_t i = 0; i < gp->n_input; i++) {
        const Onnx__ValueInfoProto *vi = gp->input[i];
        if (!vi->name || !*vi->name) {
            rc = sh_err(err, SH_EFORMAT, "%s: graph input #%zu has no name", what, i);
            goto fail;
        }
        int v = sh_graph_find(g, vi->name);
        if (v >= 0 && g->values[v].init) continue;
        sh_format fmt;
        int nd;
        int64_t shape[SH_MAX_DIMS];
        if ((rc = value_type(vi, what, "graph input", &fmt, &nd, shape, err))) goto fail;
        if (sh_graph_add_input(g, vi->name, fmt, nd, shape, err) < 0) {
            rc = sh_error_wrap(err, "%s", what);
            goto fail;
        }
    }
    /* Constant nodes become initializers */
    for (size_t i = 0; i < gp->n_node; i++) {
        const Onnx__NodeProto *np = gp->node[i];
        if (np->op_type && strcmp(np->op_type, "Constant") == 0 && is_default_domain(np->domain))
            if ((rc = load_constant(g, np, what, err))) goto fail;
    }
    /* other nodes, in an order where every input is defined first */
    added = calloc(gp->n_node + 1, 1);
    if (!added) {
        rc = sh_err(err, SH_ENOMEM, "out of memory");
        goto fail;
    }
    size_t left = 0;
    for (size_t i = 0; i < gp->n_node; i++) {
        const Onnx__NodeProto *np = gp->node[i];
        if (!np->op_type || !*np->op_type) {
            rc = sh_err(err, SH_EFORMAT, "%s: node #%zu ('%s') has no op type", what, i, np->name ? np->name : "");
            goto fail;
        }
        if (strcmp(np->op_type, "Constant") == 0 && is_default_domain(np->domain)) added[i] = 1;
        else left++;
        if (np->n_input > 1024 || np->n_output > 1024) {
            rc = sh_err(err, SH_EFORMAT, "%s: node #%zu (%s) has %zu inputs and %zu outputs", what, i, np->op_type,
                        np->n_input, np->n_output);
            goto fail;
        }
    }
    while (left > 0) {
        size_t progress = 0;
        for (size_t i = 0; i < gp->n_node; i++) {
            if (added[i]) continue;
            const Onnx__NodeProto *np = gp->node[i];
            int ready = 1;
            for (size_t j = 0; j < np->n_input && ready; j++)
                if (np->input[j] && *np->input[j] && sh_graph_find(g, np->input[j]) < 0) ready = 0;
            if (!ready) continue;
            int k = sh_graph_add_node(g, np->op_type, np->name, (int)np->n_input, (const char *const *)np->input,
                                      (int)np->n_output, (const char *const *)np->output, err);
            if (k < 0) {
                rc = sh_error_wrap(err, "%s", what);
                goto fail;
            }
            if (!is_default_domain(np->domain)) {
                char *d = xstrdup(np->domain);
                if (!d) {
                    rc = sh_err(err, SH_ENOMEM, "out of memory");
                    goto fail;
                }
                free(g->nodes[k].domain);
                g->nodes[k].domain = d;
            }
            if ((rc = load_attrs(g, k, np, what, &pending, err))) goto fail;
            added[i] = 1;
            left--;
            progress++;
        }
        if (!progress) {
            /* report the first node that cannot be placed and why */
            for (size_t i = 0; i < gp->n_node; i++) {
                if (added[i]) continue;
                const Onnx__NodeProto *np = gp->node[i];
                for (size_t j = 0; j < np->n_input; j++) {
                    if (!np->input[j] || !*np->input[j] || sh_graph_find(g, np->input[j]) >= 0) continue;
                    int produced = 0;
                    for (size_t q = 0; q < gp->n_node && !produced; q++)
                        for (size_t o = 0; o < gp->node[q]->n_output; o++)
                            if (gp->node[q]->output[o] && strcmp(gp->node[q]->output[o], np->input[j]) == 0)
                                produced = 1;
                    rc = sh_err(err, SH_EFORMAT, "%s: node '%s' (%s): input '%s' %s", what,
                                np->name && *np->name ? np->name : "(unnamed)", np->op_type, np->input[j],
                                produced ? "depends on a cycle" : "is not defined (no initializer, graph input or node output)");
                    goto fail;
                }
            }
            rc = sh_err(err, SH_EINTERNAL, "%s: cannot order the nodes", what);
            goto fail;
        }
    }
    /* graph outputs */
    for (size_t i = 0; i < gp->n_output; i++) {
        const Onnx__ValueInfoProto *vi = gp->output[i];
        if (!vi->name || !*vi->name) {
            rc = sh_err(err, SH_EFORMAT, "%s: graph output #%zu has no name", what, i);
            goto fail;
        }
        int v = sh_graph_mark_output(g, vi->name, err);
        if (v < 0) {
            rc = sh_error_wrap(err, "%s", what);
            goto fail;
        }
        sh_format fmt;
        int nd;
        int64_t shape[SH_MAX_DIMS];
        if ((rc = value_type(vi, what, "graph output", &fmt, &nd, shape, err))) goto fail;
        sh_value *val = &g->values[v];
        if (val->producer >= 0) {
            val->fmt = fmt;
            val->ndim = nd;
            if (nd > 0) memcpy(val->shape, shape, sizeof(int64_t) * (size_t)nd);
        }
    }
    /* intermediate value shapes, where given */
    for (size_t i = 0; i < gp->n_value_info; i++) {
        const Onnx__ValueInfoProto *vi = gp->value_info[i];
        if (!vi->name) continue;
        int v = sh_graph_find(g, vi->name);
        if (v < 0 || g->values[v].producer < 0) continue;
        sh_format fmt;
        int nd;
        int64_t shape[SH_MAX_DIMS];
        sh_error ignore = {0};
        if (value_type(vi, what, "value", &fmt, &nd, shape, &ignore)) continue;
        sh_value *val = &g->values[v];
        int is_out = 0;
        for (int o = 0; o < g->n_outputs; o++) is_out |= g->outputs[o] == v;
        if (is_out && val->ndim >= 0) continue;
        val->fmt = fmt;
        val->ndim = nd;
        if (nd > 0) memcpy(val->shape, shape, sizeof(int64_t) * (size_t)nd);
    }
    free(added);
    added = NULL;
    if ((rc = sh_graph_check(g, err))) {
        sh_error_wrap(err, "%s", what);
        goto fail;
    }
    if (pending.code) {
        if (err) *err = pending;
        rc = pending.code;
        goto fail;
    }
    *out = g;
    return SH_OK;
fail:
    free(added);
    sh_graph_free(g);
    return rc ? rc : SH_EINTERNAL;
}

int sh_onnx_load_mem(const void *buf, size_t n, const char *what, sh_graph **out, sh_error *err)
{
    *out = NULL;
    if (!what) what = "model";
    if (!buf && n) return sh_err(err, SH_EINVAL, "%s: no data", what);
    if (n == 0) return sh_err(err, SH_EFORMAT, "%s: not a valid ONNX model (empty file)", what);
    Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, n, buf);
    if (!m) return sh_err(err, SH_EFORMAT, "%s: not a valid ONNX model (protobuf parse failed)", what);
    int rc = load_model(m, what, out, err);
    onnx__model_proto__free_unpacked(m, NULL);
    return rc;
}

int sh_onnx_load(const char *path, sh_graph **out, sh_error *err)
{
    *out = NULL;
    void *buf = NULL;
    size_t n = 0;
    int rc = sh_read_file(path, &buf, &n, err);
    if (rc) return rc;
    rc = sh_onnx_load_mem(buf, n, path, out, err);
    free(buf);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Export                                                                    */
/* ------------------------------------------------------------------------ */

/* Every allocation of one export, freed together. */
typedef struct arena {
    void **p;
    size_t n, cap;
    int oom;
} arena;

static void *ar_alloc(arena *a, size_t sz)
{
    if (a->oom) return NULL;
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 256;
        void **p = realloc(a->p, cap * sizeof *p);
        if (!p) {
            a->oom = 1;
            return NULL;
        }
        a->p = p;
        a->cap = cap;
    }
    void *m = calloc(1, sz ? sz : 1);
    if (!m) {
        a->oom = 1;
        return NULL;
    }
    a->p[a->n++] = m;
    return m;
}

static char *ar_str(arena *a, const char *s)
{
    if (!s) s = "";
    size_t n = strlen(s) + 1;
    char *d = ar_alloc(a, n);
    if (d) memcpy(d, s, n);
    return d;
}

static void ar_free(arena *a)
{
    for (size_t i = 0; i < a->n; i++) free(a->p[i]);
    free(a->p);
}

static void *ar_dup(arena *a, const void *init, size_t sz)
{
    void *m = ar_alloc(a, sz);
    if (m) memcpy(m, init, sz);
    return m;
}

/* A new message of type T initialised with its protobuf-c INIT macro. */
#define AR_NEW(a, T, INIT) ((T *)ar_dup((a), &(T)INIT, sizeof(T)))

/* Fill a TensorProto from t (data referenced, not copied). */
static int tensor_to_proto(arena *a, const sh_tensor *t, const char *name, Onnx__TensorProto *tp, sh_error *err)
{
    Onnx__TensorProto init = ONNX__TENSOR_PROTO__INIT;
    *tp = init;
    int dt = dtype_of_fmt(t->fmt);
    if (dt < 0)
        return sh_err(err, SH_EUNSUPPORTED, "tensor '%s': format %s has no ONNX data type", name ? name : "",
                      fmt_name(t->fmt));
    tp->name = ar_str(a, name ? name : "");
    tp->has_data_type = 1;
    tp->data_type = dt;
    tp->n_dims = (size_t)t->ndim;
    tp->dims = ar_alloc(a, sizeof(int64_t) * (size_t)(t->ndim + 1));
    if (tp->dims)
        for (int i = 0; i < t->ndim; i++) tp->dims[i] = t->shape[i];
    size_t nb = sh_format_bytes(t->fmt, sh_tensor_numel(t));
    if (nb && !t->data) return sh_err(err, SH_EINVAL, "tensor '%s' has no data", name ? name : "");
    tp->has_raw_data = 1;
    tp->raw_data.len = nb;
    tp->raw_data.data = nb ? (uint8_t *)t->data : NULL;
    return a->oom ? sh_err(err, SH_ENOMEM, "out of memory") : SH_OK;
}

/* Type of a graph input/output: name, format, rank (-1 unknown), dims (-1
 * symbolic: dim_param "N" for dim 0, "N<d>" for dim d). */
static Onnx__ValueInfoProto *value_info(arena *a, const char *name, sh_format fmt, int nd, const int64_t *shape,
                                        sh_error *err)
{
    Onnx__ValueInfoProto *vi = AR_NEW(a, Onnx__ValueInfoProto, ONNX__VALUE_INFO_PROTO__INIT);
    Onnx__TypeProto *ty = AR_NEW(a, Onnx__TypeProto, ONNX__TYPE_PROTO__INIT);
    Onnx__TypeProto__Tensor *tt = AR_NEW(a, Onnx__TypeProto__Tensor, ONNX__TYPE_PROTO__TENSOR__INIT);
    if (!vi || !ty || !tt) return NULL;
    vi->name = ar_str(a, name);
    vi->type = ty;
    ty->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    ty->tensor_type = tt;
    int dt = dtype_of_fmt(fmt);
    if (dt < 0) {
        sh_err(err, SH_EUNSUPPORTED, "value '%s': format %s has no ONNX data type", name, fmt_name(fmt));
        return NULL;
    }
    tt->has_elem_type = 1;
    tt->elem_type = dt;
    if (nd >= 0) {
        Onnx__TensorShapeProto *sp = AR_NEW(a, Onnx__TensorShapeProto, ONNX__TENSOR_SHAPE_PROTO__INIT);
        if (!sp) return NULL;
        sp->n_dim = (size_t)nd;
        sp->dim = ar_alloc(a, sizeof(void *) * (size_t)(nd + 1));
        if (!sp->dim) return NULL;
        for (int d = 0; d < nd; d++) {
            Onnx__TensorShapeProto__Dimension *dim =
                AR_NEW(a, Onnx__TensorShapeProto__Dimension, ONNX__TENSOR_SHAPE_PROTO__DIMENSION__INIT);
            if (!dim) return NULL;
            if (shape[d] >= 0) {
                dim->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
                dim->dim_value = shape[d];
            } else {
                dim->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
                char dp[32];
                if (d == 0) snprintf(dp, sizeof dp, "N");
                else snprintf(dp, sizeof dp, "N%d", d);
                dim->dim_param = ar_str(a, dp);
            }
            sp->dim[d] = dim;
        }
        tt->shape = sp;
    }
    return vi;
}

static int attr_to_proto(arena *a, const sh_node *n, const sh_attr *s, Onnx__AttributeProto **out, sh_error *err)
{
    Onnx__AttributeProto *p = AR_NEW(a, Onnx__AttributeProto, ONNX__ATTRIBUTE_PROTO__INIT);
    if (!p) return sh_err(err, SH_ENOMEM, "out of memory");
    p->name = ar_str(a, s->name);
    p->has_type = 1;
    switch (s->type) {
    case SH_ATTR_INT:
        p->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
        p->has_i = 1;
        p->i = s->i;
        break;
    case SH_ATTR_FLOAT:
        p->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
        p->has_f = 1;
        p->f = s->f;
        break;
    case SH_ATTR_STRING:
        p->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING;
        p->has_s = 1;
        p->s.data = (uint8_t *)ar_str(a, s->s);
        p->s.len = s->s ? strlen(s->s) : 0;
        break;
    case SH_ATTR_INTS:
        p->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
        p->n_ints = (size_t)(s->n > 0 ? s->n : 0);
        p->ints = s->ints;
        break;
    case SH_ATTR_FLOATS:
        p->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS;
        p->n_floats = (size_t)(s->n > 0 ? s->n : 0);
        p->floats = s->floats;
        break;
    case SH_ATTR_TENSOR: {
        p->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR;
        if (!s->t) return sh_err(err, SH_EINVAL, "node '%s' (%s): tensor attribute '%s' is empty", n->name, n->op, s->name);
        p->t = ar_alloc(a, sizeof *p->t);
        if (!p->t) return sh_err(err, SH_ENOMEM, "out of memory");
        int rc = tensor_to_proto(a, s->t, "", p->t, err);
        if (rc) return sh_error_wrap(err, "node '%s' (%s) attribute '%s'", n->name, n->op, s->name);
        break;
    }
    default:
        return sh_err(err, SH_EINVAL, "node '%s' (%s): attribute '%s' has unknown type %d", n->name, n->op, s->name,
                      (int)s->type);
    }
    *out = p;
    return a->oom ? sh_err(err, SH_ENOMEM, "out of memory") : SH_OK;
}

/* Output types of graphs whose outputs have unknown rank (graphs built with
 * sh_graph_add_node): shape inference on clones, once with every unknown
 * input dim set to 1 and once with 2.  Dims that agree are concrete, dims
 * that differ are symbolic (-1).  ok = 0 when inference is impossible (an
 * unsupported op, inputs of unknown rank); the outputs then carry no shape. */
typedef struct out_types {
    int ok;
    int *ndim;
    sh_format *fmt;
    int64_t (*shape)[SH_MAX_DIMS];
} out_types;

static void free_out_types(out_types *o)
{
    free(o->ndim);
    free(o->fmt);
    free(o->shape);
}

static int infer_with(const sh_graph *g, int64_t fill, int *ndim, sh_format *fmt, int64_t (*shape)[SH_MAX_DIMS])
{
    sh_error e = {0};
    sh_graph *c = sh_graph_clone(g, &e);
    if (!c) return -1;
    sh_tensor **in = calloc((size_t)g->n_inputs + 1, sizeof *in);
    int rc = in ? 0 : -1;
    for (int i = 0; i < g->n_inputs && !rc; i++) {
        const sh_value *v = &g->values[g->inputs[i]];
        int64_t s[SH_MAX_DIMS];
        if (v->ndim < 0) rc = -1;
        for (int d = 0; d < v->ndim && !rc; d++) s[d] = v->shape[d] < 0 ? fill : v->shape[d];
        if (!rc && !(in[i] = sh_tensor_new(v->fmt, v->ndim, s, &e))) rc = -1;
    }
    if (!rc) rc = sh_graph_infer_shapes(c, (const sh_tensor *const *)in, &e) ? -1 : 0;
    for (int i = 0; i < g->n_outputs && !rc; i++) {
        const sh_value *v = &c->values[c->outputs[i]];
        ndim[i] = v->init ? v->init->ndim : v->ndim;
        fmt[i] = v->init ? v->init->fmt : v->fmt;
        if (ndim[i] > 0) memcpy(shape[i], v->init ? v->init->shape : v->shape, sizeof(int64_t) * (size_t)ndim[i]);
    }
    if (in)
        for (int i = 0; i < g->n_inputs; i++) sh_tensor_free(in[i]);
    free(in);
    sh_graph_free(c);
    return rc;
}

static void infer_outputs(const sh_graph *g, out_types *o)
{
    memset(o, 0, sizeof *o);
    int need = 0;
    for (int i = 0; i < g->n_outputs; i++) need |= g->values[g->outputs[i]].ndim < 0 && !g->values[g->outputs[i]].init;
    if (!need) return;
    size_t n = (size_t)g->n_outputs + 1;
    int *nd2 = malloc(n * sizeof(int));
    sh_format *f2 = malloc(n * sizeof(sh_format));
    int64_t(*s2)[SH_MAX_DIMS] = malloc(n * sizeof *s2);
    o->ndim = malloc(n * sizeof(int));
    o->fmt = malloc(n * sizeof(sh_format));
    o->shape = malloc(n * sizeof *o->shape);
    if (nd2 && f2 && s2 && o->ndim && o->fmt && o->shape && infer_with(g, 1, o->ndim, o->fmt, o->shape) == 0) {
        o->ok = 1;
        int two = infer_with(g, 2, nd2, f2, s2) == 0;
        for (int i = 0; i < g->n_outputs; i++)
            for (int d = 0; d < o->ndim[i]; d++)
                if (!two || nd2[i] != o->ndim[i] || s2[i][d] != o->shape[i][d]) o->shape[i][d] = -1;
    }
    free(nd2);
    free(f2);
    free(s2);
}

static int build_model(arena *a, const sh_graph *g, Onnx__ModelProto *m, sh_error *err)
{
    Onnx__ModelProto mi = ONNX__MODEL_PROTO__INIT;
    *m = mi;
    m->has_ir_version = 1;
    /* IR 8 (ONNX 1.10+) unless the opset needs a newer one */
    m->ir_version = g->opset >= 21 ? 10 : g->opset >= 19 ? 9 : 8;
    m->producer_name = ar_str(a, "shrink");
    m->producer_version = ar_str(a, SHRINK_VERSION);
    /* opsets: default domain, then every other domain used (version 1) */
    m->opset_import = ar_alloc(a, sizeof(void *) * (size_t)(g->n_nodes + 2));
    if (!m->opset_import) return sh_err(err, SH_ENOMEM, "out of memory");
    {
        Onnx__OperatorSetIdProto *o = AR_NEW(a, Onnx__OperatorSetIdProto, ONNX__OPERATOR_SET_ID_PROTO__INIT);
        if (!o) return sh_err(err, SH_ENOMEM, "out of memory");
        o->domain = ar_str(a, "");
        o->has_version = 1;
        o->version = g->opset > 0 ? g->opset : 17;
        m->opset_import[m->n_opset_import++] = o;
    }
    for (int i = 0; i < g->n_nodes; i++) {
        const char *d = g->nodes[i].domain;
        if (is_default_domain(d)) continue;
        int seen = 0;
        for (size_t j = 0; j < m->n_opset_import && !seen; j++) seen = strcmp(m->opset_import[j]->domain, d) == 0;
        if (seen) continue;
        Onnx__OperatorSetIdProto *o = AR_NEW(a, Onnx__OperatorSetIdProto, ONNX__OPERATOR_SET_ID_PROTO__INIT);
        if (!o) return sh_err(err, SH_ENOMEM, "out of memory");
        o->domain = ar_str(a, d);
        o->has_version = 1;
        o->version = 1;
        m->opset_import[m->n_opset_import++] = o;
    }
    /* metadata (plus one entry per initializer in a shrink-only format) */
    m->metadata_props = ar_alloc(a, sizeof(void *) * (size_t)(g->n_meta + g->n_values + 1));
    if (!m->metadata_props) return sh_err(err, SH_ENOMEM, "out of memory");
    {
        for (int i = 0; i < g->n_meta; i++) {
            if (strncmp(g->meta_keys[i], NATIVE_KEY, strlen(NATIVE_KEY)) == 0) continue;
            Onnx__StringStringEntryProto *p =
                AR_NEW(a, Onnx__StringStringEntryProto, ONNX__STRING_STRING_ENTRY_PROTO__INIT);
            if (!p) return sh_err(err, SH_ENOMEM, "out of memory");
            p->key = ar_str(a, g->meta_keys[i]);
            p->value = ar_str(a, g->meta_vals[i]);
            m->metadata_props[m->n_metadata_props++] = p;
        }
    }
    Onnx__GraphProto *gp = AR_NEW(a, Onnx__GraphProto, ONNX__GRAPH_PROTO__INIT);
    if (!gp) return sh_err(err, SH_ENOMEM, "out of memory");
    m->graph = gp;
    gp->name = ar_str(a, g->name ? g->name : "graph");
    /* initializers */
    gp->initializer = ar_alloc(a, sizeof(void *) * (size_t)(g->n_values + 1));
    if (!gp->initializer) return sh_err(err, SH_ENOMEM, "out of memory");
    for (int i = 0; i < g->n_values; i++) {
        const sh_value *v = &g->values[i];
        if (!v->init) continue;
        Onnx__TensorProto *tp = ar_alloc(a, sizeof *tp);
        if (!tp) return sh_err(err, SH_ENOMEM, "out of memory");
        int rc;
        if (dtype_of_fmt(v->init->fmt) < 0 && sh_format_get(v->init->fmt)) {
            /* shrink-only format: bytes as UINT8 + a metadata entry */
            const sh_tensor *t = v->init;
            sh_tensor u = {0};
            u.fmt = SH_U8;
            u.ndim = 1;
            u.shape[0] = (int64_t)t->nbytes;
            u.data = t->data;
            u.nbytes = t->nbytes;
            rc = tensor_to_proto(a, &u, v->name, tp, err);
            if (rc) return sh_error_wrap(err, "initializer '%s'", v->name);
            char spec[64 + 24 * SH_MAX_DIMS];
            size_t o = (size_t)snprintf(spec, sizeof spec, "%s ", sh_format_get(t->fmt)->name);
            for (int d = 0; d < t->ndim && o < sizeof spec; d++)
                o += (size_t)snprintf(spec + o, sizeof spec - o, d ? ",%lld" : "%lld", (long long)t->shape[d]);
            size_t kl = strlen(NATIVE_KEY) + strlen(v->name) + 1;
            char *key = ar_alloc(a, kl);
            Onnx__StringStringEntryProto *p =
                AR_NEW(a, Onnx__StringStringEntryProto, ONNX__STRING_STRING_ENTRY_PROTO__INIT);
            if (!key || !p) return sh_err(err, SH_ENOMEM, "out of memory");
            snprintf(key, kl, "%s%s", NATIVE_KEY, v->name);
            p->key = key;
            p->value = ar_str(a, spec);
            m->metadata_props[m->n_metadata_props++] = p;
        } else {
            rc = tensor_to_proto(a, v->init, v->name, tp, err);
            if (rc) return sh_error_wrap(err, "initializer '%s'", v->name);
        }
        gp->initializer[gp->n_initializer++] = tp;
    }
    /* inputs / outputs */
    gp->input = ar_alloc(a, sizeof(void *) * (size_t)(g->n_inputs + 1));
    gp->output = ar_alloc(a, sizeof(void *) * (size_t)(g->n_outputs + 1));
    if (!gp->input || !gp->output) return sh_err(err, SH_ENOMEM, "out of memory");
    for (int i = 0; i < g->n_inputs; i++) {
        const sh_value *v = &g->values[g->inputs[i]];
        Onnx__ValueInfoProto *vi = value_info(a, v->name, v->fmt, v->ndim, v->shape, err);
        if (!vi) return a->oom ? sh_err(err, SH_ENOMEM, "out of memory") : (err ? err->code : SH_EUNSUPPORTED);
        gp->input[gp->n_input++] = vi;
    }
    out_types ot;
    infer_outputs(g, &ot);
    for (int i = 0; i < g->n_outputs; i++) {
        const sh_value *v = &g->values[g->outputs[i]];
        Onnx__ValueInfoProto *vi;
        if (v->init) vi = value_info(a, v->name, v->init->fmt, v->init->ndim, v->init->shape, err);
        else if (v->ndim < 0 && ot.ok && ot.ndim[i] >= 0)
            vi = value_info(a, v->name, ot.fmt[i], ot.ndim[i], ot.shape[i], err);
        else vi = value_info(a, v->name, v->fmt, v->ndim, v->shape, err);
        if (!vi) {
            free_out_types(&ot);
            return a->oom ? sh_err(err, SH_ENOMEM, "out of memory") : (err ? err->code : SH_EUNSUPPORTED);
        }
        gp->output[gp->n_output++] = vi;
    }
    free_out_types(&ot);
    /* nodes */
    gp->node = ar_alloc(a, sizeof(void *) * (size_t)(g->n_nodes + 1));
    if (!gp->node) return sh_err(err, SH_ENOMEM, "out of memory");
    for (int i = 0; i < g->n_nodes; i++) {
        const sh_node *n = &g->nodes[i];
        Onnx__NodeProto *np = AR_NEW(a, Onnx__NodeProto, ONNX__NODE_PROTO__INIT);
        if (!np) return sh_err(err, SH_ENOMEM, "out of memory");
        np->name = ar_str(a, n->name);
        np->op_type = ar_str(a, n->op);
        if (!is_default_domain(n->domain)) np->domain = ar_str(a, n->domain);
        np->input = ar_alloc(a, sizeof(char *) * (size_t)(n->n_in + 1));
        np->output = ar_alloc(a, sizeof(char *) * (size_t)(n->n_out + 1));
        np->attribute = ar_alloc(a, sizeof(void *) * (size_t)(n->n_attrs + 1));
        if (!np->input || !np->output || !np->attribute) return sh_err(err, SH_ENOMEM, "out of memory");
        for (int j = 0; j < n->n_in; j++) np->input[j] = ar_str(a, n->in[j] >= 0 ? g->values[n->in[j]].name : "");
        np->n_input = (size_t)n->n_in;
        for (int j = 0; j < n->n_out; j++)
            np->output[j] = ar_str(a, n->out[j] >= 0 ? g->values[n->out[j]].name : "");
        np->n_output = (size_t)n->n_out;
        for (int j = 0; j < n->n_attrs; j++) {
            int rc = attr_to_proto(a, n, &n->attrs[j], &np->attribute[j], err);
            if (rc) return rc;
        }
        np->n_attribute = (size_t)n->n_attrs;
        gp->node[gp->n_node++] = np;
    }
    return a->oom ? sh_err(err, SH_ENOMEM, "out of memory") : SH_OK;
}

int sh_onnx_save(const sh_graph *g, const char *path, sh_error *err)
{
    arena a = {0};
    Onnx__ModelProto m;
    int rc = build_model(&a, g, &m, err);
    if (rc) {
        ar_free(&a);
        return sh_error_wrap(err, "%s", path);
    }
    size_t n = onnx__model_proto__get_packed_size(&m);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        ar_free(&a);
        return sh_err(err, SH_ENOMEM, "%s: out of memory (%zu bytes)", path, n);
    }
    size_t w = onnx__model_proto__pack(&m, buf);
    ar_free(&a);
    if (w != n) {
        free(buf);
        return sh_err(err, SH_EINTERNAL, "%s: protobuf packing wrote %zu of %zu bytes", path, w, n);
    }
    rc = sh_write_atomic(path, buf, n, err);
    free(buf);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* TensorProto files                                                         */
/* ------------------------------------------------------------------------ */

int sh_tensorproto_load(const char *path, sh_tensor **out, char **name, sh_error *err)
{
    *out = NULL;
    if (name) *name = NULL;
    void *buf = NULL;
    size_t n = 0;
    int rc = sh_read_file(path, &buf, &n, err);
    if (rc) return rc;
    Onnx__TensorProto *tp = onnx__tensor_proto__unpack(NULL, n, buf);
    free(buf);
    if (!tp) return sh_err(err, SH_EFORMAT, "%s: not a valid TensorProto (protobuf parse failed)", path);
    if (!tp->has_data_type) {
        onnx__tensor_proto__free_unpacked(tp, NULL);
        return sh_err(err, SH_EFORMAT, "%s: not a valid TensorProto (no data type)", path);
    }
    rc = tensor_from_proto(tp, path, "tensor", out, err);
    if (!rc && name) {
        *name = xstrdup(tp->name ? tp->name : "");
        if (!*name) {
            sh_tensor_free(*out);
            *out = NULL;
            rc = sh_err(err, SH_ENOMEM, "out of memory");
        }
    }
    onnx__tensor_proto__free_unpacked(tp, NULL);
    return rc;
}

int sh_tensorproto_save(const sh_tensor *t, const char *name, const char *path, sh_error *err)
{
    arena a = {0};
    Onnx__TensorProto tp;
    int rc = tensor_to_proto(&a, t, name, &tp, err);
    if (rc) {
        ar_free(&a);
        return sh_error_wrap(err, "%s", path);
    }
    size_t n = onnx__tensor_proto__get_packed_size(&tp);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        ar_free(&a);
        return sh_err(err, SH_ENOMEM, "out of memory");
    }
    size_t w = onnx__tensor_proto__pack(&tp, buf);
    ar_free(&a);
    if (w != n) {
        free(buf);
        return sh_err(err, SH_EINTERNAL, "%s: protobuf packing wrote %zu of %zu bytes", path, w, n);
    }
    rc = sh_write_atomic(path, buf, n, err);
    free(buf);
    return rc;
}
