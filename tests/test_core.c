/* test_core.c - formats, tensors, graph checks, runtime planning. */
#include <string.h>

#include "test.h"
#include "ops/ops.h"

TEST(format_roundtrip)
{
    float src[6] = {0.0f, 1.0f, -2.5f, 65504.0f, 1e-7f, 3.14159f}, back[6];
    uint16_t h[6];
    const sh_format_traits *f16 = sh_format_get(SH_F16), *bf = sh_format_get(SH_BF16);
    CHECK(f16 && bf && strcmp(f16->name, "f16") == 0);
    f16->from_f32(src, h, 6);
    f16->to_f32(h, back, 6);
    for (int i = 0; i < 6; i++) CHECK_NEAR(back[i], src[i], fabs(src[i]) * 1e-3 + 1e-7);
    bf->from_f32(src, h, 6);
    bf->to_f32(h, back, 6);
    for (int i = 0; i < 6; i++) CHECK_NEAR(back[i], src[i], fabs(src[i]) * 8e-3 + 1e-30);
    int8_t q[3];
    float qs[3] = {-200.0f, 1.4f, 127.6f};
    sh_format_get(SH_I8)->from_f32(qs, q, 3);
    CHECK(q[0] == -128 && q[1] == 1 && q[2] == 127);
    CHECK(sh_format_bytes(SH_F32, 10) == 40);
    CHECK(sh_format_from_name("bf16") == SH_BF16);
    CHECK(sh_format_from_name("nope") == -1);
}

TEST(graph_unknown_ops_listed)
{
    sh_error err = {0};
    sh_graph *g = sh_graph_new("t");
    int64_t s[2] = {1, 4};
    sh_graph_add_input(g, "x", SH_F32, 2, s, &err);
    const char *in[1] = {"x"}, *o1[1] = {"a"}, *o2[1] = {"b"}, *i2[1] = {"a"}, *o3[1] = {"c"}, *i3[1] = {"b"};
    sh_graph_add_node(g, "FooOp", "foo1", 1, in, 1, o1, &err);
    sh_graph_add_node(g, "BarOp", "bar1", 1, i2, 1, o2, &err);
    sh_graph_add_node(g, "FooOp", "foo2", 1, i3, 1, o3, &err);
    sh_graph_mark_output(g, "c", &err);
    int rc = sh_graph_check(g, &err);
    CHECK(rc == SH_EUNSUPPORTED);
    CHECK_MSG(strstr(err.msg, "FooOp") && strstr(err.msg, "foo1") && strstr(err.msg, "foo2") &&
                  strstr(err.msg, "BarOp") && strstr(err.msg, "bar1"),
              "message: %s", err.msg);
    sh_graph_free(g);
}

TEST(runtime_relu_chain_reuses_buffers)
{
    sh_error err = {0};
    sh_graph *g = sh_graph_new("t");
    int64_t s[2] = {-1, 1000};
    sh_graph_add_input(g, "x", SH_F32, 2, s, &err);
    const char *names[6] = {"x", "r1", "r2", "r3", "r4", "r5"};
    for (int i = 0; i < 5; i++) CHECK(sh_graph_add_node(g, "Relu", NULL, 1, &names[i], 1, &names[i + 1], &err) >= 0);
    sh_graph_mark_output(g, "r5", &err);
    sh_program *p = NULL;
    CHECK_OK(sh_program_new(g, NULL, &p, &err), &err);
    int64_t xs[2] = {2, 1000};
    sh_tensor *x = sh_tensor_new(SH_F32, 2, xs, &err);
    for (int i = 0; i < 2000; i++) sh_f32(x)[i] = (float)(i % 7) - 3.0f;
    const sh_tensor *ins[1] = {x};
    CHECK_OK(sh_program_run(p, ins, 1, &err), &err);
    sh_tensor *y = sh_program_output(p, 0);
    CHECK(y && y->shape[0] == 2 && y->shape[1] == 1000);
    for (int i = 0; i < 2000; i++) CHECK(sh_f32(y)[i] == fmaxf(0.0f, sh_f32(x)[i]));
    size_t unplanned, arena = sh_program_arena_bytes(p, &unplanned);
    CHECK_MSG(arena < unplanned && arena <= 2 * 8000, "arena %zu unplanned %zu", arena, unplanned);
    /* wrong shape: clear error */
    int64_t bad[2] = {2, 999};
    sh_tensor *xb = sh_tensor_new(SH_F32, 2, bad, &err);
    const sh_tensor *ins2[1] = {xb};
    CHECK(sh_program_run(p, ins2, 1, &err) == SH_ESHAPE);
    CHECK_MSG(strstr(err.msg, "'x'") && strstr(err.msg, "[2,999]"), "%s", err.msg);
    sh_tensor_free(x);
    sh_tensor_free(xb);
    sh_program_free(p);
    sh_graph_free(g);
}
