/* src/ctl/wakegatectl.c - the wakegatectl executable; the CLI is the rest
 * of src/ctl/ (main.c first). */
#include "src/ctl/ctl.h"

int main(int argc, char **argv)
{
    return wg_ctl_main(argc, argv);
}
