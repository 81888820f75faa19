/* cmd_prune.c - shrink prune: unstructured / block / N:M pruning (weights set
 * to zero) or structured channel pruning (channels removed, the model really
 * shrinks), with a per-layer table and totals. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: shrink prune IN -o OUT [options]\n"
            "\n"
            "Prunes a model (IN: a model file, or a built-in model mlp | lenet5 | cnn |\n"
            "llama-tiny with seeded random weights) and writes OUT atomically (format by\n"
            "extension: .onnx, or .bin for Llama models).\n"
            "\n"
            "Options:\n"
            "  -o, --output FILE      the pruned model (required)\n"
            "  --method M             l1 (default) | l2 | taylor | nm | wanda | sparsegpt\n"
            "                         (wanda: |w|*||x|| per output row; sparsegpt: OBS with\n"
            "                         weight reconstruction; both one-shot with --calib, layer\n"
            "                         by layer on the pruned earlier layers' outputs)\n"
            "  --ratio R              fraction to prune, in [0,1) (default 0.5)\n"
            "  --threshold T          prune scores below T instead of a ratio\n"
            "  --global               rank all layers together (default: each layer alone)\n"
            "  --n N --m M, --nm N:M  N:M semi-structured along the input dimension\n"
            "                         (--method nm: default 2:4)\n"
            "  --block B              prune 1 x B blocks along the input dimension\n"
            "  --structured channels  remove whole output channels / neurons: every\n"
            "                         consumer shrinks (BN, next Conv, Gemm after Flatten,\n"
            "                         residual Add groups); the model gets smaller and faster\n"
            "  --structured blocks    remove whole residual blocks (identity shortcuts): the\n"
            "                         --ratio of them with the smallest output scale, or the\n"
            "                         Add nodes named by --include\n"
            "  --include L1,L2        only these layers (node or weight names)\n"
            "  --target-sparsity S | --target-flops F | --target-latency-ms L   per-layer\n"
            "                         amounts chosen from a sensitivity table on --calib\n"
            "                         (details: shrink prune --target-sparsity 0 --help)\n"
            "  --exclude L1,L2        not these layers\n"
            "  --skip-first, --skip-last   leave the first / last prunable layer alone\n"
            "  --structured heads|ffn|layers   transformers (Llama graphs): remove attention\n"
            "                         heads (GQA: query heads within each KV group), FFN\n"
            "                         neurons, or whole layers (with --calib: the layers whose\n"
            "                         skipping raises KL least; else the smallest output norm)\n"
            "  --calib SPEC           calibration data (Taylor, wanda, sparsegpt; e.g.\n"
            "                         fashion-mnist:train or text:FILE,tok=tok512.bin)\n"
            "  --seq-len N            calibration text: tokens per row (default 64)\n"
            "  --calib-batches N      calibration batches (default 4)\n"
            "  --batch N              calibration batch size (default 32)\n"
            "  --seed S               seed of a built-in model (default 0)\n"
            "  --threads N            threads (default: all cores)\n"
            "  --pack                 store sparse enough Gemm and Conv weights packed (csr, bcsr,\n"
            "                         or n:m when they are 2:4 / 4:8): the file holds about\n"
            "                         the non-zeros and Gemm runs sparse.  An already pruned\n"
            "                         model: shrink prune IN -o OUT --ratio 0 --pack\n"
            "  --pack-min S           pack weights with at least S zeros (default 0.5)\n"
            "  --pack-formats LIST    formats allowed (default csr,bcsr,nm)\n"
            "  --pack-measure         time dense vs sparse Gemm per layer at batch 1 (and\n"
            "                         --pack-batch N) and keep the faster\n"
            "\n"
            "Fine-tuning (pruned weights stay exactly zero; N:M stays N:M):\n"
            "  --finetune EPOCHS      fine-tune on --data after pruning (per round)\n"
            "  --data SPEC            training data (e.g. fashion-mnist:train)\n"
            "  --val SPEC             validation data, evaluated after every epoch\n"
            "  --schedule S           oneshot (default) | iterative:K (K rounds of prune\n"
            "                         to s*(1-(1-k/K)^3) and fine-tune) | gradual (Zhu &\n"
            "                         Gupta cubic sparsity while training) | l1:LAMBDA\n"
            "                         (L1-regularised training, prune, fine-tune)\n"
            "  --prune-end F          gradual: reach the target at fraction F of the\n"
            "                         training steps (default 0.5)\n"
            "  --prune-every N        gradual: steps between pruning steps\n"
            "  --initial-sparsity S   gradual: sparsity of the first pruning step (0)\n"
            "  --l1-epochs N          l1: regularised epochs (default: --finetune)\n"
            "  --teacher T            distil from T while fine-tuning (e.g. IN itself)\n"
            "  --temperature T, --alpha A   distillation (defaults 4, 0.9)\n"
            "  --lr-schedule S        const | cosine | step | onecycle (default const)\n"
            "  --lr, --optimizer, ... every `shrink train` option; --batch and --seed\n"
            "                         also set the training batch and seed\n"
            "  -q, --quiet            no progress lines\n"
            "  --json                 print a JSON report on stdout\n"
            "  -h, --help             this help\n"
            "\n" CLI_EXIT_CODES);
}

/* 1 if the comma-separated list names s */
static int name_in_list(const char *list, const char *s)
{
    size_t n = strlen(s);
    for (const char *p = list; p && *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && !strncmp(p, s, n)) return 1;
        p = e ? e + 1 : NULL;
    }
    return 0;
}

static void json_shape(int nd, const int64_t *s)
{
    putchar('[');
    for (int i = 0; i < nd; i++) printf("%s%lld", i ? ", " : "", (long long)s[i]);
    putchar(']');
}

typedef struct ft_ctx {
    int quiet, epochs;
    double last;
} ft_ctx;

static void ft_progress(void *ctx, int epoch, int64_t step, int64_t total, double loss, double rate, double eta,
                        int epoch_end, double val)
{
    ft_ctx *p = ctx;
    if (p->quiet) return;
    double now = sh_now();
    if (!epoch_end && now - p->last < 10.0) return;
    p->last = now;
    fprintf(stderr, "  epoch %d/%d  step %lld/%lld  loss %.4f  %.0f images/s", epoch + 1, p->epochs, (long long)step,
            (long long)total, loss, rate);
    if (epoch_end && val >= 0) fprintf(stderr, "  val accuracy %.2f%%", 100.0 * val);
    if (!epoch_end) fprintf(stderr, "  ETA %.0fs", eta);
    fputc('\n', stderr);
}

static void ft_round(void *ctx, int k, int n, double s)
{
    ft_ctx *p = ctx;
    if (!p->quiet) fprintf(stderr, "prune round %d/%d: target %.1f%%\n", k, n, 100 * s);
}

int cmd_prune(int argc, char **argv)
{
    static const char *const auto_opts[] = {"--target-sparsity", "--target-flops", "--target-latency-ms", NULL};
    if (cli_has_opt(argc, argv, auto_opts)) return cmd_prune_auto(argc, argv); /* cmd_sensitivity.c */
    const char *cmd = "prune", *in = NULL, *out = NULL, *method = "l1", *structured = NULL, *calib = NULL;
    int json = 0, have_n = 0, have_m = 0, pack = 0;
    const char *pack_formats = NULL;
    sh_sparsify_opts so;
    sh_sparsify_opts_default(&so);
    int64_t v64 = 0, seed = 0;
    double dv = 0;
    sh_prune_opts o;
    sh_prune_opts_default(&o);
    /* fine-tuning */
    sh_prune_train_opts pt;
    sh_prune_train_opts_default(&pt);
    const char *data = NULL, *valspec = NULL, *teacher = NULL, *schedule = NULL;
    int64_t finetune = -1;
    int have_batch = 0, have_seed = 0, quiet = 0, have_ft_opt = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val;
        if (cli_is_help(a)) {
            usage(stdout);
            return EXIT_OK;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--pack")) {
            pack = 1;
        } else if (!strcmp(a, "--pack-measure")) {
            pack = 1, so.measure = 1;
        } else if (!strcmp(a, "--pack-min")) {
            if (!(val = cli_arg(cmd, argc, argv, &i)) || cli_float(cmd, a, val, 0, 1, &dv)) return EXIT_USAGE;
            pack = 1, so.min_sparsity = dv;
        } else if (!strcmp(a, "--pack-batch")) {
            if (!(val = cli_arg(cmd, argc, argv, &i)) || cli_int(cmd, a, val, 1, 1000000, &v64)) return EXIT_USAGE;
            so.batch = (int)v64;
        } else if (!strcmp(a, "--pack-formats")) {
            if (!(pack_formats = cli_arg(cmd, argc, argv, &i))) return EXIT_USAGE;
            pack = 1;
        } else if (!strcmp(a, "--global")) {
            o.global = 1;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            quiet = 1;
        } else if (!strcmp(a, "--finetune")) {
            if (!(val = cli_arg(cmd, argc, argv, &i)) || cli_int(cmd, a, val, 0, 100000, &finetune)) return EXIT_USAGE;
        } else if (!strcmp(a, "--data") || !strcmp(a, "--val") || !strcmp(a, "--teacher") || !strcmp(a, "--schedule") ||
                   !strcmp(a, "--lr-schedule")) {
            if (!(val = cli_arg(cmd, argc, argv, &i))) return EXIT_USAGE;
            if (!strcmp(a, "--data")) data = val;
            else if (!strcmp(a, "--val")) valspec = val;
            else if (!strcmp(a, "--teacher")) teacher = val;
            else if (!strcmp(a, "--schedule")) schedule = val;
            else pt.train.schedule = val, have_ft_opt = 1;
        } else if (!strcmp(a, "--prune-end") || !strcmp(a, "--initial-sparsity") || !strcmp(a, "--temperature") ||
                   !strcmp(a, "--alpha")) {
            if (!(val = cli_arg(cmd, argc, argv, &i)) ||
                cli_float(cmd, a, val, !strcmp(a, "--temperature") ? 1e-6 : 0, !strcmp(a, "--temperature") ? 1e6 : 1, &dv))
                return EXIT_USAGE;
            if (!strcmp(a, "--prune-end")) pt.end = dv;
            else if (!strcmp(a, "--initial-sparsity")) pt.initial_sparsity = dv;
            else if (!strcmp(a, "--temperature")) pt.temperature = (float)dv;
            else pt.alpha = (float)dv;
            have_ft_opt = 1;
        } else if (!strcmp(a, "--prune-every") || !strcmp(a, "--l1-epochs")) {
            if (!(val = cli_arg(cmd, argc, argv, &i)) || cli_int(cmd, a, val, 1, 1000000000, &v64)) return EXIT_USAGE;
            if (!strcmp(a, "--prune-every")) pt.every = v64;
            else pt.l1_epochs = (int)v64;
            have_ft_opt = 1;
        } else if (!strcmp(a, "--skip-first")) {
            o.skip_first = 1;
        } else if (!strcmp(a, "--skip-last")) {
            o.skip_last = 1;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            if (!(out = cli_arg(cmd, argc, argv, &i))) return EXIT_USAGE;
        } else if (!strcmp(a, "--method")) {
            if (!(method = cli_arg(cmd, argc, argv, &i))) return EXIT_USAGE;
        } else if (!strcmp(a, "--structured")) {
            if (!(structured = cli_arg(cmd, argc, argv, &i))) return EXIT_USAGE;
        } else if (!strcmp(a, "--include")) {
            if (!(o.include = cli_arg(cmd, argc, argv, &i))) return EXIT_USAGE;
        } else if (!strcmp(a, "--exclude")) {
            if (!(o.exclude = cli_arg(cmd, argc, argv, &i))) return EXIT_USAGE;
        } else if (!strcmp(a, "--calib")) {
            if (!(calib = cli_arg(cmd, argc, argv, &i))) return EXIT_USAGE;
        } else if (!strcmp(a, "--ratio")) {
            if (!(val = cli_arg(cmd, argc, argv, &i)) || cli_float(cmd, a, val, -1e9, 1e9, &dv)) return EXIT_USAGE;
            o.ratio = dv;
        } else if (!strcmp(a, "--threshold")) {
            if (!(val = cli_arg(cmd, argc, argv, &i)) || cli_float(cmd, a, val, 0, 1e30, &dv)) return EXIT_USAGE;
            o.threshold = dv;
        } else if (!strcmp(a, "--nm")) { /* --nm N:M, the same as --n N --m M */
            char *c;
            if (!(val = cli_arg(cmd, argc, argv, &i))) return EXIT_USAGE;
            if (!(c = strchr(val, ':'))) return cli_usage(cmd, "--nm wants N:M (e.g. 2:4), got '%s'", val);
            *c = 0;
            int bad = cli_int(cmd, a, val, 0, 64, &v64);
            *c = ':';
            if (bad) return EXIT_USAGE;
            o.n = (int)v64;
            if (cli_int(cmd, a, c + 1, 0, 64, &v64)) return EXIT_USAGE;
            o.m = (int)v64, have_n = have_m = 1;
        } else if (!strcmp(a, "--n") || !strcmp(a, "--m") || !strcmp(a, "--block") || !strcmp(a, "--calib-batches") ||
                   !strcmp(a, "--batch") || !strcmp(a, "--threads") || !strcmp(a, "--seed") || !strcmp(a, "--seq-len")) {
            if (!(val = cli_arg(cmd, argc, argv, &i)) || cli_int(cmd, a, val, 0, 1000000000, &v64)) return EXIT_USAGE;
            if (!strcmp(a, "--n")) o.n = (int)v64, have_n = 1;
            else if (!strcmp(a, "--m")) o.m = (int)v64, have_m = 1;
            else if (!strcmp(a, "--block")) o.block = (int)v64;
            else if (!strcmp(a, "--calib-batches")) o.calib_batches = (int)v64;
            else if (!strcmp(a, "--batch")) o.batch = (int)v64, have_batch = 1;
            else if (!strcmp(a, "--threads")) o.nthreads = (int)v64;
            else if (!strcmp(a, "--seq-len")) o.seq_len = (int)v64;
            else seed = v64, have_seed = 1;
        } else if (a[0] == '-' && a[1]) {
            int tr = cli_train_option(cmd, argc, argv, &i, &pt.train);
            if (tr < 0) return EXIT_USAGE;
            if (tr == 0) return cli_usage(cmd, "unknown option '%s'", a);
            have_ft_opt = 1;
        } else if (!in) {
            in = a;
        } else {
            return cli_usage(cmd, "unexpected argument '%s'", a);
        }
    }
    if (!in) return cli_usage(cmd, "need a model to prune");
    if (finetune < 0 && (data || valspec || teacher || schedule || have_ft_opt))
        return cli_usage(cmd, "%s: fine-tuning options need --finetune EPOCHS",
                         data ? "--data" : valspec ? "--val" : teacher ? "--teacher" : schedule ? "--schedule" : "training option");
    if (finetune >= 0 && !data) return cli_usage(cmd, "--finetune needs training data (--data SPEC)");
    if (schedule) {
        const char *c = strchr(schedule, ':');
        size_t nl = c ? (size_t)(c - schedule) : strlen(schedule);
        if (nl == 7 && !strncmp(schedule, "oneshot", 7) && !c) pt.schedule = SH_PRUNE_SCHED_ONESHOT;
        else if (nl == 7 && !strncmp(schedule, "gradual", 7) && !c) pt.schedule = SH_PRUNE_SCHED_GRADUAL;
        else if (nl == 9 && !strncmp(schedule, "iterative", 9)) {
            pt.schedule = SH_PRUNE_SCHED_ITERATIVE;
            if (c && cli_int(cmd, "--schedule iterative:K", c + 1, 1, 1000, &v64)) return EXIT_USAGE;
            if (c) pt.rounds = (int)v64;
        } else if (nl == 2 && !strncmp(schedule, "l1", 2)) {
            pt.schedule = SH_PRUNE_SCHED_L1;
            if (c && cli_float(cmd, "--schedule l1:LAMBDA", c + 1, 1e-12, 1e3, &dv)) return EXIT_USAGE;
            if (c) pt.l1 = (float)dv;
        } else
            return cli_usage(cmd, "unknown --schedule '%s' (oneshot, iterative:K, gradual, l1:LAMBDA)", schedule);
    }
    if (finetune >= 0 && cli_train_check(cmd, &pt.train, data, NULL)) return EXIT_USAGE;
    if (!out) return cli_usage(cmd, "need an output file (-o OUT)");
    if (!strcmp(method, "l1")) o.method = SH_PRUNE_L1;
    else if (!strcmp(method, "l2")) o.method = SH_PRUNE_L2;
    else if (!strcmp(method, "taylor")) o.method = SH_PRUNE_TAYLOR;
    else if (!strcmp(method, "wanda")) o.method = SH_PRUNE_WANDA;
    else if (!strcmp(method, "sparsegpt")) o.method = SH_PRUNE_SPARSEGPT;
    else if (!strcmp(method, "nm")) {
        o.method = SH_PRUNE_L1;
        if (!have_n) o.n = 2;
        if (!have_m) o.m = 4;
    } else
        return cli_usage(cmd, "unknown --method '%s' (l1, l2, taylor, nm, wanda, sparsegpt)", method);
    if (have_n != have_m && strcmp(method, "nm")) return cli_usage(cmd, "--n and --m go together");
    int blocks = structured && !strcmp(structured, "blocks");
    int llm = !structured ? -1 : !strcmp(structured, "heads") ? SH_LLM_HEADS : !strcmp(structured, "ffn") ? SH_LLM_FFN
                                : !strcmp(structured, "layers") ? SH_LLM_LAYERS : -1;
    if (structured && strcmp(structured, "channels") && !blocks && llm < 0)
        return cli_usage(cmd, "unknown --structured '%s' (channels, blocks, heads, ffn, layers)", structured);
    if (o.method == SH_PRUNE_TAYLOR && !calib) return cli_usage(cmd, "--method taylor needs --calib SPEC");
    if ((o.method == SH_PRUNE_WANDA || o.method == SH_PRUNE_SPARSEGPT) && !calib)
        return cli_usage(cmd, "--method %s needs --calib SPEC (calibration text or images)", method);
    if ((o.method == SH_PRUNE_WANDA || o.method == SH_PRUNE_SPARSEGPT) && structured && llm != SH_LLM_HEADS)
        return cli_usage(cmd, "--method %s is unstructured / N:M (with --structured only heads takes it)", method);
    if (llm >= 0 && finetune >= 0) return cli_usage(cmd, "--finetune does not go with --structured %s", structured);
    size_t olen = strlen(out);
    if (llm == SH_LLM_HEADS && olen >= 4 && !strcmp(out + olen - 4, ".bin"))
        return cli_usage(cmd, "--structured heads: a llama2.c .bin needs n_heads * head_size = dim; write OUT.onnx");
    if (strcmp(in, out) == 0) return cli_usage(cmd, "IN and OUT are the same file");
    if (pack_formats) {
        so.csr = name_in_list(pack_formats, "csr");
        so.bcsr = name_in_list(pack_formats, "bcsr");
        so.nm = name_in_list(pack_formats, "nm");
        if (!so.csr && !so.bcsr && !so.nm) return cli_usage(cmd, "--pack-formats '%s': none of csr, bcsr, nm", pack_formats);
    }
    if (pack && structured) return cli_usage(cmd, "--pack goes with unstructured / block / N:M pruning");
    if (finetune >= 0 && blocks) return cli_usage(cmd, "--finetune goes with unstructured, N:M or channel pruning");
    size_t ol = strlen(out);
    if (pack && (ol < 5 || strcmp(out + ol - 5, ".onnx")))
        return cli_usage(cmd, "--pack writes an ONNX file (OUT.onnx): llama2.c .bin files hold only dense f32 weights");
    so.nthreads = o.nthreads;

    sh_error err = {0};
    sh_graph *g = NULL, *p = NULL;
    sh_dataset *d = NULL;
    int lrc = cli_load_model(cmd, in, seed, &g);
    if (lrc) return lrc;
    if (calib && sh_dataset_load(calib, &d, &err)) {
        sh_graph_free(g);
        return cli_fail(cmd, &err);
    }
    o.calib = d;
    sh_prune_report r;
    sh_train_report tr = {0};
    tr.val_metric = -1;
    sh_dataset *td = NULL, *vd = NULL;
    sh_graph *tg = NULL;
    double t0 = sh_now();
    int rc;
    if (finetune >= 0) {
        ft_ctx fc = {quiet, (int)finetune, 0};
        pt.prune = o;
        pt.structured = structured != NULL;
        pt.train.epochs = (int)finetune;
        if (have_batch) pt.train.batch = o.batch;
        if (have_seed) pt.train.seed = (uint64_t)seed;
        if (o.nthreads) pt.train.nthreads = o.nthreads;
        pt.train.progress = ft_progress;
        pt.train.progress_ctx = &fc;
        pt.on_round = ft_round;
        pt.round_ctx = &fc;
        rc = sh_dataset_load(data, &td, &err);
        if (!rc && valspec) rc = sh_dataset_load(valspec, &vd, &err);
        if (!rc && teacher) rc = strcmp(teacher, in) ? sh_model_load(teacher, &tg, &err) : 0;
        if (!rc && teacher) pt.teacher = tg ? tg : g;
        if (!rc) rc = sh_prune_train(g, td, vd, &pt, &p, &r, &tr, &err);
    } else
        rc = llm >= 0     ? sh_prune_llm(g, llm, &o, &p, &r, &err)
             : blocks     ? sh_prune_blocks(g, &o, &p, &r, &err)
             : structured ? sh_prune_channels(g, &o, &p, &r, &err)
                          : sh_prune(g, &o, &p, &r, &err);
    sh_dataset_free(td);
    sh_dataset_free(vd);
    sh_graph_free(tg);
    double secs = sh_now() - t0;
    sh_sparsify_report sr = {0};
    if (!rc && pack) {
        sh_graph *q = NULL;
        rc = sh_sparsify(p, &so, &q, &sr, &err);
        if (!rc) {
            sh_graph_free(p);
            p = q;
        }
    }
    if (!rc) rc = sh_model_save(p, out, &err);
    if (rc) {
        sh_graph_free(g);
        sh_graph_free(p);
        sh_dataset_free(d);
        sh_sparsify_report_free(&sr);
        return cli_fail(cmd, &err);
    }
    double sp_b = r.weights ? (double)r.zeros_before / (double)r.weights : 0;
    int64_t w_after = 0;
    for (int i = 0; i < r.n_layers; i++) {
        int64_t n = 1;
        for (int k = 0; k < r.layers[i].ndim_after; k++) n *= r.layers[i].shape_after[k];
        w_after += n;
    }
    double sp_a = w_after ? (double)r.zeros_after / (double)w_after : 0;
    if (json) {
        printf("{\"input\": ");
        cli_json_str(stdout, in);
        printf(", \"output\": ");
        cli_json_str(stdout, out);
        printf(", \"mode\": \"%s\", \"method\": \"%s\", \"layers\": [", structured ? structured : o.m ? "nm" : "unstructured",
               method);
        for (int i = 0; i < r.n_layers; i++) {
            const sh_prune_layer *l = &r.layers[i];
            printf("%s{\"name\": ", i ? ", " : "");
            cli_json_str(stdout, l->name);
            printf(", \"op\": ");
            cli_json_str(stdout, l->op);
            printf(", \"shape_before\": ");
            json_shape(l->ndim_before, l->shape_before);
            printf(", \"shape_after\": ");
            json_shape(l->ndim_after, l->shape_after);
            printf(", \"params_before\": %lld, \"params_after\": %lld, \"sparsity_before\": %.6f, "
                   "\"sparsity_after\": %.6f, \"pruned\": %s, \"note\": ",
                   (long long)l->params_before, (long long)l->params_after, l->sparsity_before, l->sparsity_after,
                   l->pruned ? "true" : "false");
            cli_json_str(stdout, l->note);
            putchar('}');
        }
        printf("], \"params_before\": %lld, \"params_after\": %lld, \"bytes_before\": %lld, \"bytes_after\": %lld, "
               "\"sparsity_before\": %.6f, \"sparsity_after\": %.6f, \"seconds\": %.3f",
               (long long)r.params_before, (long long)r.params_after, (long long)r.bytes_before,
               (long long)r.bytes_after, sp_b, sp_a, secs);
        if (finetune >= 0)
            printf(", \"finetune\": {\"epochs\": %lld, \"steps\": %lld, \"final_loss\": %.6f, \"val_accuracy\": %.6f}",
                   (long long)finetune, (long long)tr.steps, tr.final_loss, tr.val_metric);
        if (pack) {
            printf(", \"pack\": {\"bytes_before\": %lld, \"bytes_after\": %lld, \"packed\": %d, \"layers\": [",
                   (long long)sr.bytes_before, (long long)sr.bytes_after, sr.packed);
            for (int i = 0; i < sr.n_layers; i++) {
                const sh_sparsify_layer *l = &sr.layers[i];
                printf("%s{\"name\": ", i ? ", " : "");
                cli_json_str(stdout, l->name);
                printf(", \"shape\": [%lld, %lld], \"sparsity\": %.6f, \"format\": \"%s\", \"bytes_before\": %lld, "
                       "\"bytes_after\": %lld, \"dense_ms\": %.6f, \"sparse_ms\": %.6f, \"dense_ms_batch\": %.6f, "
                       "\"sparse_ms_batch\": %.6f, \"note\": ",
                       (long long)l->rows, (long long)l->cols, l->sparsity, sh_format_get(l->fmt)->name,
                       (long long)l->bytes_before, (long long)l->bytes_after, l->dense_ms, l->sparse_ms, l->dense_ms_b,
                       l->sparse_ms_b);
                cli_json_str(stdout, l->note);
                putchar('}');
            }
            printf("]}");
        }
        printf("}\n");
    } else {
        char s1[96], s2[96], b1[32], b2[32];
        printf("%-22s %-7s %-18s %-18s %9s %9s %10s %10s\n", "layer", "op", "shape before", "shape after", "sparsity",
               "-> after", "params", "-> after");
        for (int i = 0; i < r.n_layers; i++) {
            const sh_prune_layer *l = &r.layers[i];
            printf("%-22s %-7s %-18s %-18s %8.1f%% %8.1f%% %10lld %10lld%s%s\n", l->name, l->op,
                   sh_shape_str(l->ndim_before, l->shape_before, s1, sizeof s1),
                   l->ndim_after ? sh_shape_str(l->ndim_after, l->shape_after, s2, sizeof s2) : "-",
                   100 * l->sparsity_before,
                   100 * l->sparsity_after, (long long)l->params_before, (long long)l->params_after,
                   l->note[0] ? "  " : "", l->note);
        }
        printf("total: %lld -> %lld parameters (%s -> %s), weight sparsity %.1f%% -> %.1f%%, %.2fs\n",
               (long long)r.params_before, (long long)r.params_after, cli_bytes(r.bytes_before, b1, sizeof b1),
               cli_bytes(r.bytes_after, b2, sizeof b2), 100 * sp_b, 100 * sp_a, secs);
        if (finetune >= 0) {
            printf("fine-tuned: %lld steps, final loss %.4f", (long long)tr.steps, tr.final_loss);
            if (tr.val_metric >= 0) printf(", val accuracy %.2f%%", 100 * tr.val_metric);
            printf("\n");
        }
        if (pack) {
            printf("\n%-22s %-14s %9s %-6s %10s %10s %10s %10s  %s\n", "packed layer", "shape [N,K]", "sparsity",
                   "format", "bytes", "-> after", "dense ms", "sparse ms", "");
            for (int i = 0; i < sr.n_layers; i++) {
                const sh_sparsify_layer *l = &sr.layers[i];
                char sh[64], d1[32] = "-", d2[32] = "-";
                snprintf(sh, sizeof sh, "[%lld,%lld]", (long long)l->rows, (long long)l->cols);
                if (l->dense_ms > 0) {
                    snprintf(d1, sizeof d1, "%.4f", l->dense_ms);
                    snprintf(d2, sizeof d2, "%.4f", l->sparse_ms);
                }
                printf("%-22s %-14s %8.1f%% %-6s %10lld %10lld %10s %10s  %s\n", l->name, sh, 100 * l->sparsity,
                       sh_format_get(l->fmt)->name, (long long)l->bytes_before, (long long)l->bytes_after, d1, d2,
                       l->note);
            }
            printf("packed %d layer(s): Gemm and Conv weights %s -> %s\n", sr.packed, cli_bytes(sr.bytes_before, b1, sizeof b1),
                   cli_bytes(sr.bytes_after, b2, sizeof b2));
        }
        printf("wrote %s\n", out);
    }
    sh_prune_report_free(&r);
    sh_sparsify_report_free(&sr);
    sh_graph_free(g);
    sh_graph_free(p);
    sh_dataset_free(d);
    return EXIT_OK;
}
