/* main.c - the shrink command-line tool: dispatch to one file per command. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} commands[] = {
    {"info", cmd_info, "ops, parameters and bytes per layer of a model"},
    {"train", cmd_train, "train a built-in model or a model file on a dataset"},
    {"eval", cmd_eval, "accuracy or perplexity, size, latency and throughput"},
    {"bench", cmd_bench, "latency percentiles and throughput, per-layer time profile"},
    {"generate", cmd_generate, "generate text with a Llama-style model"},
    {"convert", cmd_convert, "convert between ONNX and llama2.c; int8 to / from QDQ ONNX"},
    {"run", cmd_run, "run a model on TensorProto inputs, write outputs"},
    {"prune", cmd_prune, "prune (magnitude, Taylor, Wanda, SparseGPT, N:M, channels, heads,\n"
     "              layers), fine-tune with schedules, pack sparse"},
    {"distill", cmd_distill, "train a student on a teacher (soft targets, features, attention)"},
    {"sensitivity", cmd_sensitivity, "per-layer accuracy / KL drop under quantization or pruning"},
    {"quantize", cmd_quantize, "static / dynamic int8, or 8/4/3/2-bit weights (GPTQ, AWQ),\n"
     "              mixed precision, QAT"},
};

static void usage(FILE *f)
{
    fprintf(f, "shrink %s - make neural networks smaller and faster on CPUs\n\n"
               "Usage: shrink COMMAND [options]   (shrink COMMAND --help for details)\n\nCommands:\n",
            SHRINK_VERSION);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-11s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\n" CLI_EXIT_CODES);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (cli_is_help(argv[1]) || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return EXIT_OK;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("shrink %s\n", SHRINK_VERSION);
        return EXIT_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "shrink: error: unknown command '%s' (see shrink --help)\n", argv[1]);
    return EXIT_USAGE;
}
