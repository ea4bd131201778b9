/* Floating point (double precision): the classic n-body simulation of the Jovian
 * planets (sqrt and divide per pair and step) and a blocked matrix multiply, with
 * a Newton iteration for square roots; the checksum folds the results' bits. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define STEPS  200000
#define MATN   64
#define MATRIX_ROUNDS 16

#define PI 3.141592653589793
#define SOLAR_MASS (4 * PI * PI)
#define DAYS_PER_YEAR 365.24

struct body {
    double x, y, z, vx, vy, vz, mass;
};

static struct body bodies[] = {
    { 0, 0, 0, 0, 0, 0, SOLAR_MASS },
    { 4.84143144246472090e+00, -1.16032004402742839e+00, -1.03622044471123109e-01,
      1.66007664274403694e-03 * DAYS_PER_YEAR, 7.69901118419740425e-03 * DAYS_PER_YEAR,
      -6.90460016972063023e-05 * DAYS_PER_YEAR, 9.54791938424326609e-04 * SOLAR_MASS },
    { 8.34336671824457987e+00, 4.12479856412430479e+00, -4.03523417114321381e-01,
      -2.76742510726862411e-03 * DAYS_PER_YEAR, 4.99852801234917238e-03 * DAYS_PER_YEAR,
      2.30417297573763929e-05 * DAYS_PER_YEAR, 2.85885980666130812e-04 * SOLAR_MASS },
    { 1.28943695621391310e+01, -1.51111514016986312e+01, -2.23307578892655734e-01,
      2.96460137564761618e-03 * DAYS_PER_YEAR, 2.37847173959480950e-03 * DAYS_PER_YEAR,
      -2.96589568540237556e-05 * DAYS_PER_YEAR, 4.36624404335156298e-05 * SOLAR_MASS },
    { 1.53796971148509165e+01, -2.59193146099879641e+01, 1.79258772950371181e-01,
      2.68067772490389322e-03 * DAYS_PER_YEAR, 1.62824170038242295e-03 * DAYS_PER_YEAR,
      -9.51592254519715870e-05 * DAYS_PER_YEAR, 5.15138902046611451e-05 * SOLAR_MASS },
};
#define NBODIES (int)(sizeof bodies / sizeof bodies[0])

static double a[MATN][MATN], b[MATN][MATN], c[MATN][MATN];
static uint64_t checksum = 0xcbf29ce484222325ULL;

static void mix_double(double d)
{
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    checksum = (checksum ^ bits) * 0x100000001b3ULL;
}

static void offset_momentum(void)
{
    double px = 0, py = 0, pz = 0;
    for (int i = 0; i < NBODIES; i++) {
        px += bodies[i].vx * bodies[i].mass;
        py += bodies[i].vy * bodies[i].mass;
        pz += bodies[i].vz * bodies[i].mass;
    }
    bodies[0].vx = -px / SOLAR_MASS;
    bodies[0].vy = -py / SOLAR_MASS;
    bodies[0].vz = -pz / SOLAR_MASS;
}

static double energy(void)
{
    double e = 0;
    for (int i = 0; i < NBODIES; i++) {
        struct body *b = &bodies[i];
        e += 0.5 * b->mass * (b->vx * b->vx + b->vy * b->vy + b->vz * b->vz);
        for (int j = i + 1; j < NBODIES; j++) {
            struct body *o = &bodies[j];
            double dx = b->x - o->x, dy = b->y - o->y, dz = b->z - o->z;
            e -= b->mass * o->mass / sqrt(dx * dx + dy * dy + dz * dz);
        }
    }
    return e;
}

static void advance(double dt)
{
    for (int i = 0; i < NBODIES; i++) {
        struct body *b = &bodies[i];
        for (int j = i + 1; j < NBODIES; j++) {
            struct body *o = &bodies[j];
            double dx = b->x - o->x, dy = b->y - o->y, dz = b->z - o->z;
            double d2 = dx * dx + dy * dy + dz * dz;
            double mag = dt / (d2 * sqrt(d2));
            b->vx -= dx * o->mass * mag;
            b->vy -= dy * o->mass * mag;
            b->vz -= dz * o->mass * mag;
            o->vx += dx * b->mass * mag;
            o->vy += dy * b->mass * mag;
            o->vz += dz * b->mass * mag;
        }
    }
    for (int i = 0; i < NBODIES; i++) {
        bodies[i].x += dt * bodies[i].vx;
        bodies[i].y += dt * bodies[i].vy;
        bodies[i].z += dt * bodies[i].vz;
    }
}

static double newton_sqrt(double x)
{
    double r = x > 1 ? x / 2 : 1;
    for (int i = 0; i < 30; i++)
        r = 0.5 * (r + x / r);
    return r;
}

int main(void)
{
    offset_momentum();
    double e0 = energy();
    for (int s = 0; s < STEPS; s++)
        advance(0.01);
    double e1 = energy();
    printf("n-body: %d steps, energy %.9f -> %.9f\n", STEPS, e0, e1);
    mix_double(e0);
    mix_double(e1);

    for (int i = 0; i < MATN; i++)
        for (int j = 0; j < MATN; j++) {
            a[i][j] = (double)((i * 7 + j * 3) % 17) / 8.0 - 1.0;
            b[i][j] = (double)((i * 5 + j * 11) % 13) / 4.0 + 0.25;
        }
    for (int r = 0; r < MATRIX_ROUNDS; r++) {
        memset(c, 0, sizeof c);
        for (int i = 0; i < MATN; i++)
            for (int k = 0; k < MATN; k++) {
                double aik = a[i][k];
                for (int j = 0; j < MATN; j++)
                    c[i][j] += aik * b[k][j];
            }
        double trace = 0, norm = 0;
        for (int i = 0; i < MATN; i++) {
            trace += c[i][i];
            for (int j = 0; j < MATN; j++)
                norm += c[i][j] * c[i][j];
        }
        mix_double(trace);
        mix_double(sqrt(norm));
        mix_double(newton_sqrt(norm));
        /* feed the result back, scaled, so every round differs */
        for (int i = 0; i < MATN; i++)
            for (int j = 0; j < MATN; j++)
                a[i][j] = c[i][j] / (norm / (MATN * MATN)) - a[i][j] * 0.5;
    }
    printf("matrix: %d rounds of %dx%d\n", MATRIX_ROUNDS, MATN, MATN);
    printf("BENCH-CHECKSUM 0x%016llx\n", (unsigned long long)checksum);
    return 0;
}
