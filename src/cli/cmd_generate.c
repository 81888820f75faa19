/* cmd_generate.c - shrink generate MODEL --tokenizer TOK: text generation with a
 * Llama-style model (llama2.c .bin or an ONNX export of one). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *usage_text =
    "Usage: shrink generate MODEL --tokenizer TOK [options]\n"
    "\n"
    "Generate text with a Llama-style MODEL (llama2.c .bin checkpoint or .onnx)\n"
    "and its llama2.c tokenizer TOK (tok*.bin), as llama2.c's run does: the text\n"
    "goes to stdout exactly (no newline added), tokens/s to stderr.\n"
    "\n"
    "Options:\n"
    "  --tokenizer TOK   tokenizer file (required)\n"
    "  --prompt S        text to start from (default: empty, BOS only)\n"
    "  --steps N         positions to run including the prompt (default 256;\n"
    "                    0 or more than the model's seq_len: seq_len)\n"
    "  --temp T          temperature, 0 = greedy (default 1.0)\n"
    "  --topp P          top-p (nucleus) sampling, 0 or 1 = off (default 0.9)\n"
    "  --seed S          random seed; the same seed gives the same text (default 42)\n"
    "  --threads N       threads (default: all cores)\n"
    "  --json            one JSON object on stdout: text, tokens, tokens_per_s\n"
    "  -q, --quiet       no tokens/s line on stderr\n"
    "  -h, --help        this help\n"
    "\n"
    "Example:\n"
    "  shrink generate stories260K.bin --tokenizer tok512.bin --temp 0 --steps 200\n"
    "\n" CLI_EXIT_CODES;

typedef struct sink {
    int json;
    char *buf;
    size_t n, cap;
} sink;

static void on_piece(const char *piece, void *ud)
{
    sink *s = ud;
    if (!s->json) {
        fputs(piece, stdout);
        fflush(stdout);
        return;
    }
    size_t l = strlen(piece);
    if (s->n + l + 1 > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 4096;
        while (cap < s->n + l + 1) cap *= 2;
        char *nb = realloc(s->buf, cap);
        if (!nb) return;
        s->buf = nb, s->cap = cap;
    }
    memcpy(s->buf + s->n, piece, l + 1);
    s->n += l;
}

int cmd_generate(int argc, char **argv)
{
    const char *cmd = "generate", *model = NULL, *tokp = NULL, *prompt = "";
    int64_t steps = 256, seed = 42, threads = 0;
    double temp = 1.0, topp = 0.9;
    int json = 0, quiet = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (cli_is_help(a)) {
            fputs(usage_text, stdout);
            return EXIT_OK;
        } else if (strcmp(a, "--tokenizer") == 0) {
            if (!(tokp = cli_arg(cmd, argc, argv, &i))) return EXIT_USAGE;
        } else if (strcmp(a, "--prompt") == 0) {
            if (!(prompt = cli_arg(cmd, argc, argv, &i))) return EXIT_USAGE;
        } else if (strcmp(a, "--steps") == 0) {
            if (!(v = cli_arg(cmd, argc, argv, &i)) || cli_int(cmd, a, v, 0, 1 << 24, &steps)) return EXIT_USAGE;
        } else if (strcmp(a, "--seed") == 0) {
            if (!(v = cli_arg(cmd, argc, argv, &i)) || cli_int(cmd, a, v, 0, INT64_MAX, &seed)) return EXIT_USAGE;
        } else if (strcmp(a, "--threads") == 0) {
            if (!(v = cli_arg(cmd, argc, argv, &i)) || cli_int(cmd, a, v, 1, 1024, &threads)) return EXIT_USAGE;
        } else if (strcmp(a, "--temp") == 0) {
            if (!(v = cli_arg(cmd, argc, argv, &i)) || cli_float(cmd, a, v, 0.0, 100.0, &temp)) return EXIT_USAGE;
        } else if (strcmp(a, "--topp") == 0) {
            if (!(v = cli_arg(cmd, argc, argv, &i)) || cli_float(cmd, a, v, 0.0, 1.0, &topp)) return EXIT_USAGE;
        } else if (strcmp(a, "--json") == 0) {
            json = 1;
        } else if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) {
            quiet = 1;
        } else if (a[0] == '-' && a[1]) {
            return cli_usage(cmd, "unknown option '%s'", a);
        } else if (!model) {
            model = a;
        } else {
            return cli_usage(cmd, "unexpected argument '%s'", a);
        }
    }
    if (!model) return cli_usage(cmd, "no MODEL given");
    if (!tokp) return cli_usage(cmd, "--tokenizer TOK is required");
    sh_error err = {0};
    sh_graph *g = NULL;
    sh_tokenizer *tok = NULL;
    int rc = sh_model_load(model, &g, &err);
    if (rc) return cli_fail(cmd, &err);
    sh_llama_config cfg;
    int vocab = 0;
    if (sh_llama_config_of(g, &cfg, &err) == SH_OK) vocab = cfg.vocab_size;
    memset(&err, 0, sizeof err);
    rc = sh_tokenizer_load(tokp, vocab, &tok, &err);
    if (rc) {
        sh_graph_free(g);
        return cli_fail(cmd, &err);
    }
    sink s = {json, NULL, 0, 0};
    sh_generate_stats st;
    rc = sh_generate(g, tok, prompt, (int)steps, (float)temp, (float)topp, (uint64_t)seed, (int)threads, on_piece, &s,
                     &st, &err);
    int code = EXIT_OK;
    if (rc) {
        if (!json) fflush(stdout);
        code = cli_fail(cmd, &err);
    } else if (json) {
        printf("{\"text\": ");
        cli_json_str(stdout, s.buf ? s.buf : "");
        printf(", \"prompt_tokens\": %d, \"generated_tokens\": %d, \"prefill_seconds\": %.6f, "
               "\"gen_seconds\": %.6f, \"tokens_per_s\": %.2f}\n",
               st.prompt_tokens, st.generated_tokens, st.prefill_seconds, st.gen_seconds, st.tokens_per_s);
    } else {
        fflush(stdout);
        if (!quiet) fprintf(stderr, "\nachieved tok/s: %.1f (%d tokens)\n", st.tokens_per_s, st.generated_tokens);
    }
    free(s.buf);
    sh_tokenizer_free(tok);
    sh_graph_free(g);
    return code;
}
