/* runtime.h - internal runtime declarations. */
#ifndef SH_RUNTIME_H
#define SH_RUNTIME_H
#include "shrink.h"
#endif
