# shellcheck shell=bash
# The disk layout of every renkei image, sourced by image/build and image/boot-test.
#
# These identifiers are fixed on purpose: a build is reproducible only if they are, and boxes in
# the field keep this layout for life (signed A/B updates rewrite one root slot and add a boot
# entry; they never re-partition). Changing any of them is a new layout, not a new version.
#
# Sizes in MiB. The disk needs at least IMAGE_MIB; the data partition is the last one so that a
# later version can grow it into the rest of a bigger disk.

# shellcheck disable=SC2034  # the variables are used by the scripts that source this file
{
  # RAUC's compatible string of this hardware and image line: the image's /etc/rauc/system.conf
  # and every update bundle's manifest carry it (image/bundle).
  RAUC_COMPATIBLE=renkei-x86_64

  DISK_GUID=cf764dfb-bcbe-49b1-88b8-b464ad60b674

  ESP_MIB=128
  ESP_UUID=a680551c-620c-4132-9a9e-608f8ce9d799
  # FAT volume id (8 hex digits) and label of the EFI system partition.
  ESP_VOLID=52454e4b
  ESP_LABEL=RENKEI-ESP

  ROOT_MIB=1024
  ROOT_A_UUID=04677cd3-6ce4-4481-8bd3-899897d26079
  ROOT_B_UUID=c1d7a3ab-aea7-4070-a845-02e452d71b6f
  # The ext4 UUID and directory hash seed of the root file system (the same file system is
  # written to whichever slot an update targets).
  ROOT_FS_UUID=a8313108-7d4d-4b34-8a5c-437cd80ea132
  ROOT_FS_HASH_SEED=c9169d0e-4161-454a-ab8b-18150e70f809

  DATA_MIB=256
  DATA_UUID=5cf262e9-89e9-49a9-8026-1e890359e3b5
  DATA_FS_UUID=46e8f111-3f3b-4a8e-971b-125046bed36e
  DATA_FS_HASH_SEED=179d771e-d690-4026-bcbe-9b1db509dea5

  # GPT partition types (Discoverable Partitions Specification).
  TYPE_ESP=C12A7328-F81F-11D2-BA4B-00A0C93EC93B
  TYPE_ROOT_X86_64=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709
  TYPE_LINUX_DATA=0FC63DAF-8483-4772-8E79-3D69D8477DE4

  # 1 MiB before the first partition (protective MBR + primary GPT, aligned) and 1 MiB after
  # the last one (backup GPT).
  ESP_START_MIB=1
  ROOT_A_START_MIB=$((ESP_START_MIB + ESP_MIB))
  ROOT_B_START_MIB=$((ROOT_A_START_MIB + ROOT_MIB))
  DATA_START_MIB=$((ROOT_B_START_MIB + ROOT_MIB))
  IMAGE_MIB=$((DATA_START_MIB + DATA_MIB + 1))
}
