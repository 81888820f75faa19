/* cmd_train.c - shrink train MODEL_OR_KIND --data SPEC: train a built-in
 * model (mlp, mlp-small, lenet5, cnn, llama-tiny) or a model file, optionally resuming
 * from a checkpoint, and save the trained model. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

static const char *usage_text =
    "Usage: shrink train MODEL_OR_KIND --data SPEC [options]\n"
    "\n"
    "Train a built-in model (mlp, mlp-small, lenet5, cnn, llama-tiny) or a model file\n"
    "(.onnx, llama2.c .bin) on a data set and save the trained model.\n"
    "\n"
    "Options:\n"
    "  --data SPEC            training data (required): fashion-mnist:train[:N],\n"
    "                         idx:IMAGES.gz,LABELS.gz, text:FILE[,tok=TOK.bin]\n"
    "  --val SPEC             validation data, evaluated after every epoch\n"
    "                         (accuracy for images, NLL per token for text)\n"
    "  --tokenizer TOK        tokenizer for text: data sets (adds ,tok=TOK)\n"
    "  -o, --output OUT       save the trained model (.onnx or llama2.c .bin)\n"
    "  --epochs N             passes over the data (default 1)\n"
    "  --batch N              mini-batch size (default 64)\n"
    "  --lr X                 peak learning rate (default 0.001)\n"
    "  --optimizer sgd|adamw  (default adamw)\n"
    "  --momentum X           SGD momentum (default 0.9)\n"
    "  --nesterov             SGD with Nesterov momentum\n"
    "  --weight-decay X       weight decay on weights (not biases/norms), default 0\n"
    "  --schedule S           const, cosine, step, onecycle (default const)\n"
    "  --warmup X             cosine: warm-up fraction of the steps; onecycle:\n"
    "                         rising fraction (default 0.3)\n"
    "  --step-size N          step schedule: epochs per decay (default 1)\n"
    "  --gamma X              step schedule: decay factor (default 0.1)\n"
    "  --label-smoothing X    cross-entropy label smoothing (default 0)\n"
    "  --accum N              gradient accumulation steps (default 1)\n"
    "  --seed N               seed of the weights and of the data order (default 1)\n"
    "  --threads N            threads (default: all cores)\n"
    "  --checkpoint PATH      save progress here; resume from it if it exists\n"
    "  --checkpoint-every N   also save every N optimizer steps\n"
    "  --max-steps N          stop after N optimizer steps (the schedule still\n"
    "                         spans all epochs)\n"
    "  --seq-len N            language models: tokens per sample (default 128)\n"
    "  --json                 one JSON object on stdout instead of text\n"
    "  -q, --quiet            no progress lines\n"
    "  -h, --help             this help\n"
    "\n"
    "Examples:\n"
    "  shrink train lenet5 --data fashion-mnist:train --val fashion-mnist:test \\\n"
    "      --epochs 5 --optimizer adamw --lr 0.003 --schedule onecycle -o lenet5.onnx\n"
    "  shrink train cnn --data fashion-mnist:train --epochs 3 --checkpoint cnn.ckpt -o cnn.onnx\n"
    "  shrink train llama-tiny --data text:tinyshakespeare.txt --seq-len 128 --max-steps 200\n"
    "\n" CLI_EXIT_CODES;


typedef struct prog_ctx {
    int quiet;
    double last;          /* time of the last non-terminal progress line */
    int epochs;
    const char *unit;
    int lm;
} prog_ctx;

static void progress_cb(void *ctx, int epoch, int64_t step, int64_t total, double loss, double rate, double eta,
                        int epoch_end, double val)
{
    prog_ctx *p = ctx;
    if (p->quiet) return;
    if (!epoch_end && !isatty(2)) { /* logs: a line every 10 s */
        double now = sh_now();
        if (now - p->last < 10.0) return;
        p->last = now;
    }
    if (!epoch_end) {
        fprintf(stderr, "%sepoch %d/%d  step %lld/%lld  loss %.4f  %.0f %s/s  ETA %.0fs%s", isatty(2) ? "\r" : "",
                epoch + 1, p->epochs, (long long)step, (long long)total, loss, rate, p->unit, eta,
                isatty(2) ? "\033[K" : "\n");
    } else {
        fprintf(stderr, "%sepoch %d/%d  step %lld/%lld  loss %.4f  %.0f %s/s", isatty(2) ? "\r" : "", epoch + 1,
                p->epochs, (long long)step, (long long)total, loss, rate, p->unit);
        if (val >= 0) {
            if (p->lm) fprintf(stderr, "  val nll %.4f", val);
            else fprintf(stderr, "  val accuracy %.2f%%", 100.0 * val);
        }
        fprintf(stderr, "%s\n", isatty(2) ? "\033[K" : "");
    }
    fflush(stderr);
}

int cmd_train(int argc, char **argv)
{
    const char *C = "train";
    const char *model = NULL, *data = NULL, *valspec = NULL, *out = NULL, *tok = NULL, *v;
    int json = 0, quiet = 0;
    sh_train_opts o;
    sh_train_opts_default(&o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
#define STROPT(flag, dst)                                                                                              \
    else if (strcmp(a, flag) == 0)                                                                                     \
    {                                                                                                                  \
        if (!(v = cli_arg(C, argc, argv, &i))) return EXIT_USAGE;                                                      \
        dst = v;                                                                                                       \
    }
        int tr = cli_train_option(C, argc, argv, &i, &o);
        if (tr < 0) return EXIT_USAGE;
        if (tr > 0) continue;
        if (cli_is_help(a)) {
            fputs(usage_text, stdout);
            return EXIT_OK;
        } else if (strcmp(a, "--json") == 0) json = 1;
        else if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) quiet = 1;
        STROPT("--data", data)
        STROPT("--val", valspec)
        STROPT("--tokenizer", tok)
        STROPT("-o", out)
        STROPT("--output", out)
        else if (a[0] == '-' && a[1]) return cli_usage(C, "unknown option '%s'", a);
        else if (!model) model = a;
        else return cli_usage(C, "unexpected argument '%s' (one MODEL_OR_KIND only)", a);
    }
    if (!model) return cli_usage(C, "missing MODEL_OR_KIND (mlp, mlp-small, lenet5, cnn, llama-tiny or a model file)");
    if (!data) return cli_usage(C, "missing --data SPEC");
    if (cli_train_check(C, &o, data, tok)) return EXIT_USAGE;
    if (cli_model_kind_ok(C, "model", model)) return EXIT_USAGE;

    char *data_full = cli_with_tok(data, tok), *val_full = valspec ? cli_with_tok(valspec, tok) : NULL;
    sh_error err = {0};
    sh_graph *g = NULL;
    sh_dataset *tr = NULL, *va = NULL;
    int rc = EXIT_OK;
    if (sh_dataset_load(data_full ? data_full : data, &tr, &err)) {
        rc = cli_fail(C, &err);
        goto done;
    }
    if (valspec && sh_dataset_load(val_full ? val_full : valspec, &va, &err)) {
        rc = cli_fail(C, &err);
        goto done;
    }
    if (cli_model_for_data(model, data, tr, &o, &g, &err)) {
        rc = cli_fail(C, &err);
        goto done;
    }
    prog_ctx pc = {quiet || json, sh_now(), o.epochs, tr->kind == 2 ? "tokens" : "images", tr->kind == 2};
    o.progress = progress_cb;
    o.progress_ctx = &pc;
    if (!quiet && !json) {
        char b[32];
        fprintf(stderr, "training %s (%lld parameters, %s) on %s: %lld %s, %d epoch%s, batch %d%s, %s lr %g, %s\n",
                model, (long long)sh_graph_param_count(g), cli_bytes(sh_graph_param_bytes(g), b, sizeof b), data,
                (long long)tr->n, tr->kind == 2 ? "tokens" : "images", o.epochs, o.epochs == 1 ? "" : "s", o.batch,
                o.accum > 1 ? " (accumulated)" : "", o.optimizer, o.lr, o.schedule);
    }
    sh_train_report rep;
    if (sh_train(g, tr, va, &o, &rep, &err)) {
        rc = cli_fail(C, &err);
        goto done;
    }
    if (out && sh_model_save(g, out, &err)) {
        rc = cli_fail(C, &err);
        goto done;
    }
    if (json) {
        printf("{\"model\": ");
        cli_json_str(stdout, model);
        printf(", \"data\": ");
        cli_json_str(stdout, data);
        printf(", \"epochs\": %d, \"batch\": %d, \"accum\": %d, \"optimizer\": ", o.epochs, o.batch, o.accum);
        cli_json_str(stdout, o.optimizer);
        printf(", \"lr\": %g, \"schedule\": ", o.lr);
        cli_json_str(stdout, o.schedule);
        printf(", \"params\": %lld, \"steps\": %lld, \"final_loss\": %.6f, \"seconds\": %.3f, \"items_per_s\": %.1f",
               (long long)sh_graph_param_count(g), (long long)rep.steps, rep.final_loss, rep.seconds, rep.items_per_s);
        if (va) printf(", \"%s\": %.6f", tr->kind == 2 ? "val_nll" : "val_accuracy", rep.val_metric);
        if (out) {
            printf(", \"output\": ");
            cli_json_str(stdout, out);
        }
        printf("}\n");
    } else {
        printf("trained %s: %lld steps in %.1f s (%.0f %s/s), final loss %.4f", model, (long long)rep.steps,
               rep.seconds, rep.items_per_s, tr->kind == 2 ? "tokens" : "images", rep.final_loss);
        if (va && rep.val_metric >= 0) {
            if (tr->kind == 2) printf(", val nll %.4f", rep.val_metric);
            else printf(", val accuracy %.2f%%", 100.0 * rep.val_metric);
        }
        printf("\n");
        if (out) printf("saved %s\n", out);
    }
done:
    free(data_full);
    free(val_full);
    sh_graph_free(g);
    sh_dataset_free(tr);
    sh_dataset_free(va);
    return rc;
}
